"""Serves a django-eventstream project behind a GRIP proxy, as its users deploy it:
``python -m tests.eventstream_backend.serve PORT CONTROL_URL KEY DB [storage|nostorage]``.

``/events/`` is django-eventstream's own view on the channel ``test`` (``GripMiddleware``
in front; with ``storage``, ``DjangoModelStorage`` keeps events for recovery, in the
SQLite file ``DB``); ``/send/?n=N`` calls ``send_event("test", "message", {"n": N})``
(published to the proxy's control URL before it answers), ``/skip/?n=N`` stores one
without publishing it (a gap the proxy recovers from), ``/kick/`` sends
django-eventstream's kick to the anonymous user and ``/page/`` is a page that follows
``/events/`` with the browser's ``EventSource``."""

from __future__ import annotations

import json
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import include, path


def send(request):
    from django_eventstream import send_event
    send_event("test", "message", {"n": int(request.GET["n"])}, async_publish=False)
    return HttpResponse("sent\n", content_type="text/plain")


def skip(request):
    """An event stored and not published: the GRIP proxy sees a gap (prev-id) next."""
    from django_eventstream.eventstream import get_storage
    get_storage().append_event("test", "message", json.dumps({"n": int(request.GET["n"])}))
    return HttpResponse("stored\n", content_type="text/plain")


PAGE = """<!doctype html><title>events</title><script>
const out = (type, id, data) => console.log(JSON.stringify([type, id, data]));
const source = new EventSource("/events/");
source.onopen = () => out("open", null, null);
source.onerror = () => out("error", null, null);
source.onmessage = (e) => out("message", e.lastEventId, e.data);
source.addEventListener("stream-open", (e) => out("stream-open", e.lastEventId, e.data));
</script>"""


def page(request):
    """A page of the application's that follows /events/ with the browser's EventSource
    (each event a console line)."""
    return HttpResponse(PAGE, content_type="text/html")


def kick(request):
    from django_eventstream.utils import publish_kick
    publish_kick("anonymous", "test")
    return HttpResponse("kicked\n", content_type="text/plain")


urlpatterns: list = []  # (filled once the settings are configured: see the end)


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True


if __name__ == "__main__":
    port, control, key, db = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    storage = sys.argv[5] == "storage"
    settings.configure(
        DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
        SECRET_KEY="eventstream-test-secret-key-of-enough-length",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                        "django_eventstream"],
        MIDDLEWARE=["django_grip.GripMiddleware"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db}},
        GRIP_PROXIES=[{"control_uri": control, "key": key}],
        **({"EVENTSTREAM_STORAGE_CLASS": "django_eventstream.storage.DjangoModelStorage"}
           if storage else {}))
    django.setup()
    urlpatterns.extend([
        path("events/", include("django_eventstream.urls"), {"channels": ["test"]}),
        path("send/", send),
        path("skip/", skip),
        path("kick/", kick),
        path("page/", page),
    ])
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    from django.core.wsgi import get_wsgi_application
    server = make_server("127.0.0.1", port, get_wsgi_application(), server_class=Threaded,
                         handler_class=Quiet)
    print("serving", flush=True)
    server.serve_forever()
