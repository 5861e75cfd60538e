/* The latency load client: N EventSource-like (or WebSocket) connections read by one
 * epoll loop in C, so that what is measured is the server, not a Python client reading
 * 10,000 sockets.
 *
 *   sse_load HOST PORT PATH N EXPECTED TIMEOUT_S [SUBSCRIBE]
 *
 * Opens N connections sending "GET PATH" (Accept: text/event-stream), prints "ready"
 * once every response head arrived, then reads events.  Each event's data is the
 * publisher's send time (CLOCK_REALTIME, nanoseconds); the latency of each delivery is
 * the time it was read minus that.  It stops after EXPECTED deliveries or TIMEOUT_S
 * seconds without one, and prints one line of JSON: deliveries, p50/p99/max in ms, and
 * the seconds from the first connect to "ready".
 *
 * With SUBSCRIBE (a JSON text), each connection is a WebSocket instead: an upgrade on
 * PATH, then SUBSCRIBE sent as one masked text frame; it is ready at the first text
 * frame the server sends back (the answer), and each later text frame whose JSON has a
 * "data" string starting with digits is a delivery.
 * Built by extras/bench/latency.py with gcc -O2; part of the benchmark, not the daemon.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CARRY 4096

struct conn {
    int fd;
    int head_done;
    int answered; /* WebSocket: the answer to SUBSCRIBE arrived */
    size_t used;
    char buf[CARRY];
};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int compare(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t *samples;
static size_t nsamples, capacity;

/* per event (by its send time): the slowest delivery, for SSE_LOAD_EVENTS=1 */
#define EVENTS 4096
static int64_t event_sent[EVENTS], event_worst[EVENTS];
static int nevents;

static void per_event(int64_t sent, int64_t ns) {
    for (int i = nevents - 1; i >= 0 && i >= nevents - 8; i--)
        if (event_sent[i] == sent) {
            if (ns > event_worst[i]) event_worst[i] = ns;
            return;
        }
    if (nevents < EVENTS) {
        event_sent[nevents] = sent;
        event_worst[nevents++] = ns;
    }
}

static void record(int64_t ns) {
    if (nsamples == capacity) {
        capacity = capacity ? capacity * 2 : 1 << 20;
        samples = realloc(samples, capacity * sizeof *samples);
        if (!samples) { perror("realloc"); exit(1); }
    }
    samples[nsamples++] = ns;
}

static const char *subscribe_frame; /* WebSocket: the masked SUBSCRIBE frame */
static size_t subscribe_len;

/* A masked text frame of `text` (RFC 6455 5.2; mask key 0: the bytes stay as they are). */
static char *masked_frame(const char *text, size_t *len) {
    size_t n = strlen(text), head = n < 126 ? 6 : 8;
    char *frame = malloc(head + n);
    frame[0] = (char)0x81;
    if (n < 126) {
        frame[1] = (char)(0x80 | n);
    } else {
        frame[1] = (char)(0x80 | 126);
        frame[2] = (char)(n >> 8);
        frame[3] = (char)(n & 0xff);
    }
    memset(frame + head - 4, 0, 4);
    memcpy(frame + head, text, n);
    *len = head + n;
    return frame;
}

/* The send time at the start of a JSON text's "data" string, or -1. */
static int64_t data_time(const char *start, const char *end) {
    const char *data = memmem(start, end - start, "\"data\":", 7);
    if (!data) return -1;
    data += 7;
    while (data < end && *data == ' ') data++;
    if (data + 1 >= end || *data != '"' || data[1] < '0' || data[1] > '9') return -1;
    return strtoll(data + 1, NULL, 10);
}

/* Consume complete WebSocket frames from c->buf (the head first). */
static void consume_ws(struct conn *c, int64_t at) {
    char *start = c->buf, *end = c->buf + c->used;
    if (!c->head_done) {
        char *head = memmem(start, c->used, "\r\n\r\n", 4);
        if (!head) return;
        if (c->used < 12 || memcmp(start, "HTTP/1.1 101", 12) != 0) {
            fprintf(stderr, "no upgrade: %.*s\n", (int)(head - start), start);
            exit(1);
        }
        c->head_done = 1;
        start = head + 4;
        if (write(c->fd, subscribe_frame, subscribe_len) != (ssize_t)subscribe_len) {
            perror("write");
            exit(1);
        }
    }
    while (end - start >= 2) {
        unsigned char *b = (unsigned char *)start;
        size_t size = b[1] & 0x7f, head = 2;
        if (size == 126) {
            if (end - start < 4) break;
            size = (size_t)b[2] << 8 | b[3];
            head = 4;
        } else if (size == 127) {
            if (end - start < 10) break;
            size = 0;
            for (int i = 2; i < 10; i++) size = size << 8 | b[i];
            head = 10;
        }
        if ((size_t)(end - start) < head + size) break;
        if ((b[0] & 0x0f) == 1) { /* text */
            if (!c->answered) {
                c->answered = 1;
            } else {
                int64_t sent = data_time(start + head, start + head + size);
                if (sent >= 0) {
                    record(at - sent);
                    per_event(sent, at - sent);
                }
            }
        }
        start += head + size;
    }
    c->used = end - start;
    memmove(c->buf, start, c->used);
}

/* Consume complete events ("\n\n"-terminated) from c->buf; record each data time. */
static void consume(struct conn *c, int64_t at) {
    char *start = c->buf, *end = c->buf + c->used, *stop;
    if (!c->head_done) {
        char *head = memmem(start, c->used, "\r\n\r\n", 4);
        if (!head) return;
        c->head_done = 1;
        start = head + 4;
    }
    while ((stop = memmem(start, end - start, "\n\n", 2)) != NULL) {
        char *data = memmem(start, stop - start, "data: ", 6);
        if (data && data + 6 < stop && data[6] >= '0' && data[6] <= '9') {
            int64_t sent = strtoll(data + 6, NULL, 10);
            record(at - sent);
            per_event(sent, at - sent);
        }
        start = stop + 2;
    }
    c->used = end - start;
    memmove(c->buf, start, c->used);
}

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: sse_load HOST PORT PATH N EXPECTED TIMEOUT_S [SUBSCRIBE]\n");
        return 2;
    }
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]), n = atoi(argv[4]);
    long expected = atol(argv[5]);
    int timeout_ms = atoi(argv[6]) * 1000;
    struct rlimit lim = {n + 64, n + 64};
    setrlimit(RLIMIT_NOFILE, &lim);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    int websocket = argc == 8;
    if (websocket) subscribe_frame = masked_frame(argv[7], &subscribe_len);
    char request[1024];
    int len = websocket
        ? snprintf(request, sizeof request,
                   "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", path, host)
        : snprintf(request, sizeof request,
                   "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n",
                   path, host);
    int64_t connecting = now_ns(), connected = 0;
    int ep = epoll_create1(0);
    struct conn *conns = calloc(n, sizeof *conns);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            return 1;
        }
        if (write(fd, request, len) != len) { perror("write"); return 1; }
        fcntl(fd, F_SETFL, O_NONBLOCK);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    struct epoll_event events[1024];
    int heads = 0, announced = 0;
    char scratch[65536];
    for (;;) {
        int ready = epoll_wait(ep, events, 1024, timeout_ms);
        if (ready <= 0) break;
        int64_t at = now_ns();
        for (int i = 0; i < ready; i++) {
            struct conn *c = events[i].data.ptr;
            for (;;) {
                ssize_t got = read(c->fd, scratch, sizeof scratch);
                if (got <= 0) {
                    if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                        close(c->fd);
                    }
                    break;
                }
                for (ssize_t off = 0; off < got;) {
                    size_t room = CARRY - c->used;
                    size_t take = (size_t)(got - off) < room ? (size_t)(got - off) : room;
                    memcpy(c->buf + c->used, scratch + off, take);
                    c->used += take;
                    off += take;
                    int before = websocket ? c->answered : c->head_done;
                    if (websocket) consume_ws(c, at); else consume(c, at);
                    heads += (websocket ? c->answered : c->head_done) && !before;
                    if (c->used == CARRY) c->used = 0; /* (no event is that long) */
                }
            }
        }
        if (!announced && heads == n) {
            connected = now_ns();
            printf("ready\n");
            fflush(stdout);
            announced = 1;
            nsamples = 0; /* (a stream-open event is no delivery) */
        }
        if (announced && (long)nsamples >= expected) break;
    }
    qsort(samples, nsamples, sizeof *samples, compare);
    double p50 = nsamples ? samples[nsamples / 2] / 1e6 : -1;
    double p99 = nsamples ? samples[(size_t)(nsamples * 0.99)] / 1e6 : -1;
    double max = nsamples ? samples[nsamples - 1] / 1e6 : -1;
    if (getenv("SSE_LOAD_EVENTS")) {
        for (int i = 0; i < nevents; i++)
            fprintf(stderr, "%d %.2f\n", i, event_worst[i] / 1e6);
    }
    printf("{\"deliveries\": %zu, \"p50_ms\": %.2f, \"p99_ms\": %.2f, \"max_ms\": %.2f, "
           "\"connect_s\": %.3f}\n", nsamples, p50, p99, max,
           connected ? (connected - connecting) / 1e9 : -1.0);
    return 0;
}
