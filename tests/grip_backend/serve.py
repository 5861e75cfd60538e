"""Serves the GRIP test backend: ``python -m tests.grip_backend.serve PORT DAEMON_URL KEY``.

Views: /api/plain/ (a plain answer saying whether the request was signed), /api/big/
(200,000 bytes), /api/stream/
(a held text stream on ``stream-test``, ``?ka=1`` with keep-alives), /api/sse/ (a held
event stream on ``sse-test``) and /api/poll/ (a held response on ``poll-test``,
``?timeout=N``)."""

from __future__ import annotations

import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path


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


def big(request):
    return HttpResponse(b"x" * 200_000, content_type="text/plain")


urlpatterns = [path("api/plain/", plain), path("api/big/", big), path("api/stream/", stream),
               path("api/sse/", sse), path("api/poll/", poll)]


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
    from django.core.wsgi import get_wsgi_application
    server = make_server("127.0.0.1", port, get_wsgi_application(), handler_class=Quiet)
    print("serving", flush=True)
    server.serve_forever()
