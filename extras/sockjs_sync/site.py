"""The Django side of the Django + ZeroMQ + SockJS article, as a one-file site: a page
that follows the daemon's SockJS endpoint (``new SockJS(".../echo")``, listening only)
and a view that saves a change and tells everyone through ZeroMQ, the article's way — a
PUB socket connected to the FORWARDER, which the daemon's SUB socket reads.

``python site.py PORT DAEMON_URL FORWARDER_XSUB_URL`` (extras/sockjs_sync/run.py starts
it with the rest)."""

from __future__ import annotations

import json
import sys
import threading

import django
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

#: sockjs-client, as the article's page loads it (from a CDN here).
SOCKJS_URL = "https://cdn.jsdelivr.net/npm/sockjs-client@1.6.1/dist/sockjs.min.js"

PAGE = """<!doctype html><meta charset=utf-8><title>sync</title>
<script src="%(sockjs)s"></script>
<h1>Shared notes</h1>
<form id=change><input id=text autocomplete=off> <button>Change</button></form>
<ul id=notes></ul>
<script>
var SyncServer = new SockJS("%(daemon)s/echo");
SyncServer.onopen = function () { document.body.dataset.open = "1"; };
SyncServer.onmessage = function (e) {
  var note = JSON.parse(e.data), item = document.createElement("li");
  item.textContent = note.text;
  document.getElementById("notes").appendChild(item);
};
document.getElementById("change").onsubmit = function (event) {
  event.preventDefault();
  fetch("/change/", {method: "POST", body: JSON.stringify(
    {text: document.getElementById("text").value})});
};
</script>"""

#: The notes saved so far (the article's "data", kept in memory here).
NOTES: list[str] = []
#: One PUB socket for the process: a socket made per request would lose its first
#: messages while its connection is being set up (ZeroMQ's "slow joiner").
_pub = None
_lock = threading.Lock()


def page(request):
    return HttpResponse(PAGE % {"sockjs": SOCKJS_URL, "daemon": settings.DAEMON_URL})


@csrf_exempt
def change(request):
    """Save a change, then push it to every open page: channel ``sync`` on ZeroMQ."""
    text = json.loads(request.body)["text"]
    NOTES.append(text)
    with _lock:
        _pub.send_multipart([b"sync", json.dumps({"text": text}).encode()])
    return JsonResponse({"saved": len(NOTES)})


urlpatterns = [path("", page), path("change/", change)]

if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    import zmq
    port, daemon_url, forwarder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
                       SECRET_KEY="sockjs-sync-example", DAEMON_URL=daemon_url,
                       MIDDLEWARE=[])
    django.setup()
    _pub = zmq.Context.instance().socket(zmq.PUB)
    _pub.connect(forwarder)
    from django.core.wsgi import get_wsgi_application
    print("serving", flush=True)
    make_server("127.0.0.1", port, get_wsgi_application()).serve_forever()
