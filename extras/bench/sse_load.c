/* The latency load client: N EventSource-like connections read by one epoll loop in C,
 * so that what is measured is the server, not a Python client reading 10,000 sockets.
 *
 *   sse_load HOST PORT PATH N EXPECTED TIMEOUT_S
 *
 * Opens N connections sending "GET PATH" (Accept: text/event-stream), prints "ready"
 * once every response head arrived, then reads events.  Each event's data is the
 * publisher's send time (CLOCK_REALTIME, nanoseconds); the latency of each delivery is
 * the time it was read minus that.  It stops after EXPECTED deliveries or TIMEOUT_S
 * seconds without one, and prints one line of JSON: deliveries, p50/p99/max in ms.
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
    if (argc != 7) {
        fprintf(stderr, "usage: sse_load HOST PORT PATH N EXPECTED TIMEOUT_S\n");
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
    char request[1024];
    int len = snprintf(request, sizeof request,
                       "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n",
                       path, host);
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
                    int before = c->head_done;
                    consume(c, at);
                    heads += c->head_done && !before;
                    if (c->used == CARRY) c->used = 0; /* (no event is that long) */
                }
            }
        }
        if (!announced && heads == n) {
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
    printf("{\"deliveries\": %zu, \"p50_ms\": %.2f, \"p99_ms\": %.2f, \"max_ms\": %.2f}\n",
           nsamples, p50, p99, max);
    return 0;
}
