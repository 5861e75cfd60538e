"""Serves the GRIP test backend: ``python -m tests.grip_backend.serve PORT DAEMON_URL KEY``.

Views: /api/plain/ (a plain answer saying whether the request was signed), /api/big/
(200,000 bytes), /api/stream/
(a held text stream on ``stream-test``, ``?ka=1`` with keep-alives), /api/sse/ (a held
event stream on ``sse-test``) and /api/poll/ (a held response on ``poll-test``,
``?timeout=N``)."""

from __future__ import annotations

import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path
from gripcontrol import WebSocketEvent


def plain(request):
    response = HttpResponse(f"hello from django; signed={request.grip.proxied}\n",
                            content_type="text/plain")
    response["X-Backend"] = "django"
    return response


def stream(request):
    from django_grip import set_hold_stream
    if request.GET.get("ka"):
        set_hold_stream(request, "stream-test", keep_alive_data="ka\n", keep_alive_timeout=1)
    else:
        set_hold_stream(request, "stream-test")
    return HttpResponse("welcome to the stream\n", content_type="text/plain")


def sse(request):
    from django_grip import set_hold_stream
    set_hold_stream(request, "sse-test")
    return HttpResponse(":\n\n", content_type="text/event-stream")


def poll(request):
    from django_grip import set_hold_longpoll
    set_hold_longpoll(request, "poll-test", timeout=int(request.GET.get("timeout", 20)))
    return HttpResponse("nothing yet\n", content_type="text/plain")


#: What the chat saw of its clients' ends ("close 1000", "disconnect"), in order.
SEEN: list[str] = []


def chat(request):  # (wrapped in websocket_only below)
    """A WebSocket chat written the way django-grip's users write one: the client is
    accepted and subscribed to ``room``; then each text it sends is a command."""
    from django_grip import publish
    from gripcontrol import WebSocketMessageFormat, websocket_control_message
    ws = request.wscontext
    if ws.is_opening():
        ws.accept()
        if request.GET.get("skipself"):  # (skip what this user publishes)
            ws.send_control(websocket_control_message(
                "subscribe", {"channel": "room", "filters": ["skip-self"]}))
        else:
            ws.subscribe("room")
        ws.send("welcome")
    while ws.can_recv():
        try:
            message = ws.recv()
        except OSError:
            SEEN.append("disconnect")
            break
        if message is None:
            SEEN.append(f"close {ws.close_code}")
            ws.close()
            break
        if isinstance(message, bytes):
            ws.send_binary(b"got " + message)
            continue
        command, _, arg = message.partition(" ")
        if command == "echo":
            ws.send(arg)
        elif command == "say":  # (to the whole room, through the proxy)
            publish("room", WebSocketMessageFormat(arg), blocking=True,
                    meta={"sender": ws.meta.get("user", "")})
            ws.send("said")
        elif command == "binary":
            ws.send_binary(arg.encode())
        elif command == "user":  # (kept by the proxy: Set-Meta-User, and set-meta
            ws.meta["user"] = arg  # for the filters, which read the latter in Pushpin)
            ws.send_control(websocket_control_message(
                "set-meta", {"name": "user", "value": arg}))
            ws.send(f"user {arg}")
        elif command == "whoami":
            ws.send("you are " + ws.meta.get("user", "nobody"))
        elif command == "leave":
            ws.unsubscribe("room")
            ws.send("left")
        elif command == "bye":
            ws.close(4000)
        elif command == "ka":
            ws.send_control(websocket_control_message(
                "keep-alive", {"content": "still here", "timeout": 1}))
            ws.send("ka set")
        elif command == "raw":  # (a message without the prefix: not the client's)
            ws.out_events.append(WebSocketEvent("TEXT", arg.encode()))
            ws.send("raw sent")
        elif command == "detach":
            ws.detach()
    return HttpResponse()


def ws_refused(request):
    return HttpResponse("no WebSockets for you\n", status=403, content_type="text/plain")


def ws_publish(request):
    import base64

    from django_grip import publish
    from gripcontrol import WebSocketMessageFormat
    if "close" in request.GET:
        fmt = WebSocketMessageFormat(action="close", code=int(request.GET["close"]))
    elif "bin" in request.GET:
        fmt = WebSocketMessageFormat(base64.urlsafe_b64decode(request.GET["bin"]),
                                     binary=True)
    else:
        fmt = WebSocketMessageFormat(request.GET["text"])
    publish("room", fmt, blocking=True, meta={"sender": request.GET.get("sender", "")})
    return HttpResponse("published\n", content_type="text/plain")


def ws_seen(request):
    return HttpResponse("\n".join(SEEN), content_type="text/plain")


def big(request):
    return HttpResponse(b"x" * 200_000, content_type="text/plain")


urlpatterns = [path("api/plain/", plain), path("api/big/", big), path("api/stream/", stream),
               path("api/sse/", sse), path("api/poll/", poll),
               path("api/ws-refused/", ws_refused), path("api/ws-publish/", ws_publish),
               path("api/ws-seen/", ws_seen)]


class Threaded(ThreadingMixIn, WSGIServer):
    """A view that publishes waits for the proxy, which may be asking this backend."""

    daemon_threads = True


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port, daemon_url, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    settings.configure(
        DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="grip-test",
        MIDDLEWARE=["django_grip.GripMiddleware"],
        GRIP_PROXIES=[{"control_uri": daemon_url, "key": key}],
        GRIP_PROXY_REQUIRED=True)  # unsigned holds get 501: only the proxy is trusted
    django.setup()
    from django_grip import websocket_only  # (reads the settings as it is imported)
    urlpatterns.append(path("api/ws/", websocket_only(chat)))
    from django.core.wsgi import get_wsgi_application
    server = make_server("127.0.0.1", port, get_wsgi_application(), handler_class=Quiet,
                         server_class=Threaded)
    print("serving", flush=True)
    server.serve_forever()
