"""The machine-readable specs (``media/openapi.json``, OpenAPI 3.1, and
``media/asyncapi.json``, AsyncAPI 3.0, served at ``/static/``) are valid documents, and
a real daemon's answers and messages match them: HTTP answers checked by openapi-core,
SSE events and WebSocket messages by their AsyncAPI JSON Schemas, so neither can drift."""

from __future__ import annotations

import json
import time
from typing import Any

import jsonschema
import pytest
import referencing
import requests
from websockets.sync.client import connect

from tests.daemon import DEADLINE, ROOT, Daemon
from tests.test_jquery import node_modules  # noqa: F401

OPENAPI = json.loads((ROOT / "media" / "openapi.json").read_text())
ASYNCAPI = json.loads((ROOT / "media" / "asyncapi.json").read_text())
SECRET = "k" * 32


def test_the_openapi_document_is_valid():
    from openapi_spec_validator import validate
    validate(OPENAPI)


def test_the_asyncapi_document_is_valid(node_modules):  # noqa: F811
    """Against the AsyncAPI Initiative's own JSON Schema of 3.0.0 (npm @asyncapi/specs)."""
    schema = json.loads((node_modules / "@asyncapi" / "specs" / "schemas" /
                         "3.0.0-without-$id.json").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(ASYNCAPI)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    running = Daemon(tmp_path_factory.mktemp("specs"), f"--jwt-secret={SECRET}",
                     "--http-secret=pub", "--policies=chat.*=public+publish+presence",
                     "--max-body=2000")
    yield running
    running.stop()


def checked(method: str, port: int, path: str, **kwargs: Any) -> requests.Response:
    """A real answer, validated against the OpenAPI document by openapi-core."""
    from openapi_core import OpenAPI
    from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
    answer = requests.request(method, f"http://127.0.0.1:{port}{path}", timeout=DEADLINE,
                              **kwargs)
    OpenAPI.from_dict(OPENAPI).validate_response(RequestsOpenAPIRequest(answer.request),
                                                 RequestsOpenAPIResponse(answer))
    return answer


def test_http_answers_match_the_openapi_document(daemon):
    port, key = daemon.port, {"Authorization": "Bearer pub"}
    assert checked("POST", port, "/publish", data={"channel": "a", "message": "x",
                                                   "key": "pub"}).status_code == 200
    assert checked("POST", port, "/publish", json={"channel": "a", "data": {"n": 1}},
                   headers=key).status_code == 200
    assert checked("POST", port, "/publish", json=[{"channel": "a", "data": 1, "id": "i1"},
                                                   {"channels": ["b", "c"], "data": "y"}],
                   headers=key).status_code == 200
    for refused, status in ((dict(json={"channel": "bad name", "data": 1}, headers=key), 400),
                            (dict(json={"channel": "a", "data": 1}), 401),
                            (dict(json={"channel": "a", "data": "z" * 3000}, headers=key),
                             413)):
        assert checked("POST", port, "/publish", **refused).status_code == status
    before = daemon.publish_form("channel=a&message=p&key=pub")[1]["events"][0]["id"]
    daemon.publish_form("channel=a&message=q&key=pub")
    poll = checked("GET", port, f"/?channels=a&transport=poll&lastEventId={before}")
    assert poll.json()["events"][0]["data"] == "q"
    assert checked("GET", port, "/?transport=poll").status_code == 400
    assert checked("GET", port, "/stats").json()["version"]
    assert checked("GET", port, "/stats/channels").status_code == 200
    assert checked("GET", port, "/presence?channel=chat.x", headers=key).json()["clients"] \
        == []
    assert checked("GET", port, "/healthz").json() == {"status": "alive"}
    assert checked("GET", port, "/readyz").json()["status"] == "ready"
    assert checked("GET", port, "/metrics").text.startswith("#")
    for name in ("openapi.json", "asyncapi.json"):  # (published by the daemon itself)
        served = requests.get(f"http://127.0.0.1:{port}/static/{name}", timeout=DEADLINE)
        assert served.json() == json.loads((ROOT / "media" / name).read_text())


def message_schemas(channel: str) -> list[dict[str, Any]]:
    return [m["payload"] for m in ASYNCAPI["channels"][channel]["messages"].values()]


def validate(message: dict[str, Any], channel: str) -> None:
    """``message`` matches exactly one message of ``channel`` in the AsyncAPI document."""
    registry = referencing.Registry().with_resource(
        "urn:asyncapi", referencing.Resource.from_contents(
            ASYNCAPI, default_specification=referencing.jsonschema.DRAFT202012))
    fits = []
    for payload in message_schemas(channel):
        # (its references, to the document's components, resolved in the document)
        schema = json.loads(json.dumps(payload).replace('"#/components/',
                                                        '"urn:asyncapi#/components/'))
        if jsonschema.Draft202012Validator(schema, registry=registry).is_valid(message):
            fits.append(payload)
    assert len(fits) == 1, (message, len(fits))


def sse_events(raw: bytes) -> list[dict[str, str]]:
    """The events of an SSE stream's bytes, as the AsyncAPI document describes them."""
    found = []
    for block in raw.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line.startswith(":") and ": " in line:
                name, _, value = line.partition(": ")
                fields[name] = fields[name] + "\n" + value if name == "data" and \
                    name in fields else value
        if "data" in fields:
            found.append(fields)
    return found


def test_sse_events_match_the_asyncapi_document(daemon):
    port = daemon.port
    stream = requests.get(f"http://127.0.0.1:{port}/?channels=s", stream=True,
                          timeout=DEADLINE)
    daemon.publish_form("channel=s&message=line+one%0Aline+two&key=pub")
    daemon.publish_form("channel=s&message=x&event=score&key=pub")
    raw = b""
    while raw.count(b"\n\n") < 4:
        raw += stream.raw.read1(65536)
    stream.close()
    gap = requests.get(f"http://127.0.0.1:{port}/?channels=s&transport=poll",
                       headers={"Last-Event-ID": "nope-1", "Accept": "text/event-stream",
                                "X-Requested-With": "XMLHttpRequest"}, timeout=DEADLINE)
    events = sse_events(raw) + sse_events(gap.content)
    assert {e.get("event") for e in events} >= {None, "stream-open", "score", "history-gap"}
    for event in events:
        validate(event, "stream")


def test_websocket_messages_match_the_asyncapi_document(daemon):
    sent, received = [], []
    with connect(f"ws://127.0.0.1:{daemon.port}/") as ws, \
            connect(f"ws://127.0.0.1:{daemon.port}/") as other:
        def ask(message: dict[str, Any], answers: int = 1) -> None:
            sent.append(message)
            ws.send(json.dumps(message))
            for _ in range(answers):
                received.append(json.loads(ws.recv(DEADLINE)))

        ask({"type": "ping", "id": 1})
        ask({"type": "subscribe", "id": 2, "channels": ["chat.room", "news"]}, 2)  # + join
        other.send(json.dumps({"type": "subscribe", "id": 1, "channels": ["chat.room"]}))
        received.append(json.loads(ws.recv(DEADLINE)))  # the other's join
        ask({"type": "publish", "id": 3, "channel": "chat.room", "data": {"t": "hi"}}, 2)
        ask({"type": "presence", "id": 4, "channel": "chat.room"})
        ask({"type": "publish", "id": 5, "channel": "news", "data": "x"})  # refused
        ask({"type": "unsubscribe", "id": 6, "channels": ["news"]})
        other.close()
        received.append(json.loads(ws.recv(DEADLINE)))  # its leave
        ask({"type": "subscribe", "id": 7, "channels": ["old"], "lastEventId": "nope-1"}, 2)
        token = __import__("jwt").encode({"sub": "ann", "exp": int(time.time()) + 1}, SECRET)
        ask({"type": "subscribe", "id": 8, "channels": ["t"], "token": token}, 2)  # + expiry
    kinds = {m["type"] for m in received}
    assert kinds >= {"pong", "subscribed", "join", "event", "published", "presence",
                     "error", "unsubscribed", "leave", "gap", "token-expired"}, kinds
    for message in sent:
        validate(message, "websocket")
    for message in received:
        validate(message, "websocket")
