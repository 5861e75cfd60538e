"""Private channels over real sockets: a ``twistd`` daemon with policies, tokens (HS256
and RS256) and an auth callback served by a real small HTTP application; attacked as
the issue describes.  Every token minted here is looked for in the daemon's log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from extras.publisher import PublishError, make_token, send_event
from tests.daemon import DEADLINE, Daemon, SSEClient
from tests.services import free_port

SECRET = "hs256-secret-for-the-security-tests!!"
AUDIENCE = "cyclone-test"
PUBLISH_KEY = "publish-key-for-the-security-tests"
MINTED: list[str] = []  # every token made here; none may reach the log


def mint(sub="alice", channels=None, publish=None, ttl=300, key=SECRET, alg="HS256",
         **claims):
    payload = {"aud": AUDIENCE, "exp": int(time.time()) + ttl, **claims}
    for name, value in (("sub", sub), ("channels", channels), ("publish", publish)):
        if value is not None:
            payload[name] = value
    token = jwt.encode(payload, key, algorithm=alg)
    MINTED.append(token)
    return token


def forge_hs256(payload, key):
    """Signed by hand: PyJWT refuses to HMAC with a PEM key (the HS/RS confusion)."""
    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    sig = b64(hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    MINTED.append(f"{head}.{body}.{sig}")
    return MINTED[-1]


class AuthApp(http.server.BaseHTTPRequestHandler):
    """The web application's auth callback; ``server.mode`` says how it answers."""

    def do_POST(self):
        server = self.server
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append({"body": request, "cookie": self.headers.get("Cookie"),
                                "authorization": self.headers.get("Authorization")})
        mode = server.mode
        if mode == "slow":
            server.release.wait(DEADLINE)
        status, body = 200, {"allow": request["channels"], "ttl": 0}
        if mode == "deny":
            body = {"allow": [], "ttl": 0}
        elif mode == "partial":
            body = {"allow": request["channels"][:1], "ttl": 0}
        elif mode == "cached":
            body = {"allow": request["channels"], "ttl": 60}
        elif mode == "error":
            status, body = 500, {"oops": True}
        elif mode == "refuse":
            status = 403
        raw = b"<html>not json" if mode == "garbage" else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def auth_app():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AuthApp)
    server.mode, server.requests, server.release = "allow", [], threading.Event()
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (folder / "secret").write_text(SECRET + "\n")
    (folder / "public.pem").write_text(public)
    return {"folder": folder, "private": pem, "public": public}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, keys, auth_app):
    folder = tmp_path_factory.mktemp("secure")
    daemon = Daemon(folder, f"--jwt-secret-file={keys['folder'] / 'secret'}",
                    f"--jwt-public-key={keys['folder'] / 'public.pem'}",
                    f"--jwt-audience={AUDIENCE}",
                    "--policies=user.*=token,private-*=callback,closed.*=deny",
                    f"--auth-url=http://127.0.0.1:{auth_app.server_address[1]}/auth",
                    "--auth-timeout=2", "--auth-cache=0", f"--http-secret={PUBLISH_KEY}",
                    "--access-log=1")
    yield daemon
    daemon.stop()
    log = "".join(daemon.log)
    assert "&token=*** " in log  # the access log was on, and blanked tokens
    for token in MINTED:
        for part in token.split("."):
            if len(part) > 16:
                assert part not in log, "a token reached the log"


def answer(port, query, headers=None):
    """(status, headers, JSON body or the open SSEClient) of a subscribe request."""
    client = SSEClient(port, query, headers)
    if client.status == 200:
        return client.status, client.headers, client
    length = int(client.headers.get("content-length", "0"))
    while len(client.buffer) < length:
        client.buffer += client._recv()
    client.close()
    return client.status, client.headers, json.loads(client.buffer[:length])


def publish(daemon, channel, data):
    status, body = daemon.request("POST", "/publish", json.dumps(
        {"channel": channel, "data": data}), {"Content-Type": "application/json",
                                              "Authorization": f"Bearer {PUBLISH_KEY}"})
    assert status == 200, body
    return body["events"][0]["id"]


def read_until(client, last_data):
    """Every event up to and including the one whose data is ``last_data``."""
    count = 1
    while True:
        events = client.events(count)
        for n, event in enumerate(events):
            if event["data"] == last_data:
                return events[:n + 1]
        count = len(events) + 1


# the token matrix ---------------------------------------------------------------------

def _tampered():
    head, body, sig = mint(channels=["user.mine"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["channels"] = ["*"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{head}.{forged}.{sig}"


TOKEN_MATRIX = [
    # (case, channels, token, where, status, error text)
    ("valid, in the query", "user.feed", lambda k: mint(channels=["user.feed"]), "query",
     200, None),
    ("valid, in the header", "user.feed", lambda k: mint(channels=["user.feed"]), "header",
     200, None),
    ("valid, in the cookie", "user.feed", lambda k: mint(channels=["user.feed"]), "cookie",
     200, None),
    ("valid RS256", "user.feed",
     lambda k: mint(channels=["user.feed"], key=k["private"], alg="RS256"), "query", 200, None),
    ("pattern claim", "user.feed", lambda k: mint(channels=["user.*"]), "query", 200, None),
    ("own user-limited channel", "notify%23alice", lambda k: mint(sub="alice"), "query",
     200, None),
    ("no token", "user.feed", lambda k: None, "query", 401, "a token is needed"),
    ("expired", "user.feed", lambda k: mint(channels=["user.feed"], ttl=-10), "query",
     401, "expired"),
    ("nbf in the future", "user.feed",
     lambda k: mint(channels=["user.feed"], nbf=int(time.time()) + 600), "query",
     401, "not valid yet"),
    ("wrong signature", "user.feed",
     lambda k: mint(channels=["user.feed"], key="another-secret-of-the-same-length!!!"),
     "query", 401, "bad signature"),
    ("alg none", "user.feed", lambda k: jwt.encode(
        {"channels": ["user.feed"], "aud": AUDIENCE, "exp": int(time.time()) + 60}, None,
        algorithm="none"), "query", 401, "'none' is not accepted"),
    ("HS/RS confusion", "user.feed", lambda k: forge_hs256(
        {"channels": ["user.feed"], "aud": AUDIENCE, "exp": int(time.time()) + 60},
        k["public"]), "query", 401, "bad signature"),
    ("tampered payload", "user.feed", lambda k: _tampered(), "query", 401, "bad signature"),
    ("wrong aud", "user.feed", lambda k: mint(channels=["user.feed"], aud="elsewhere"),
     "query", 401, "another audience"),
    ("malformed", "user.feed", lambda k: "not-a-token", "query", 401, "malformed"),
    ("channel not in the claim", "user.feed", lambda k: mint(channels=["user.other"]),
     "query", 403, "does not allow channel user.feed"),
    ("another user's channel", "notify%23bob", lambda k: mint(sub="alice"), "query",
     403, "limited to another user"),
    ("closed channel", "closed.x", lambda k: mint(channels=["*"]), "query", 403,
     "closed to subscribers"),
    # RFC 7519: NumericDate is a number (PyJWT alone takes "1796385082")
    ("exp as a string", "user.feed", lambda k: mint(
        channels=["user.feed"], ttl=0, exp=str(int(time.time()) + 300)), "query", 401,
     "'exp' is not a number"),
    ("nbf as a string", "user.feed", lambda k: mint(channels=["user.feed"], nbf="1"),
     "query", 401, "'nbf' is not a number"),
    # the user is everything after the first '#'
    ("a user name holding '#'", "notify%23bob%23alice", lambda k: mint(sub="alice"),
     "query", 403, "limited to another user"),
    ("the same, its owner", "notify%23bob%23alice", lambda k: mint(sub="bob#alice"),
     "query", 200, None),
    ("an empty name before '#'", "%2342", lambda k: mint(sub="alice", channels=["*"]),
     "query", 403, "limited to another user"),
    ("an empty user after '#'", "notify%23", lambda k: mint(sub="", channels=["*"]),
     "query", 403, "limited to another user"),
]


@pytest.mark.parametrize("case,channels,make,where,status,error", TOKEN_MATRIX,
                         ids=[row[0] for row in TOKEN_MATRIX])
def test_token_matrix(daemon, keys, case, channels, make, where, status, error):
    token = make(keys)
    query, headers = f"channels={channels}", {}
    if token and where == "query":
        query += f"&token={token}"
    elif token and where == "header":
        headers["Authorization"] = f"Bearer {token}"
    elif token:
        headers["Cookie"] = f"other=1; cyclone_sse_token={token}"
    got, got_headers, body = answer(daemon.port, query, headers)
    assert got == status, body
    if status == 200:
        assert got_headers["content-type"].startswith("text/event-stream")
        body.close()
        return
    assert error in body["error"] and body["status"] == status
    if status == 401:
        assert got_headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        assert error in got_headers["www-authenticate"]
    else:
        assert body["channel"] == channels.replace("%23", "#")


def test_the_same_token_works_for_long_polling(daemon):
    token = mint(channels=["user.poll"])
    before = publish(daemon, "user.poll", "seen")
    publish(daemon, "user.poll", "polled")
    status, answer = daemon.request(
        "GET", f"/?channels=user.poll&transport=poll&token={token}&lastEventId={before}")
    assert status == 200
    assert [e["data"] for e in answer["events"]] == ["polled"]


def test_a_stream_is_ended_at_expiry_with_the_position_to_resume_from(daemon):
    token = mint(channels=["user.clock"], ttl=2)
    client = SSEClient(daemon.port, f"channels=user.clock&token={token}")
    first = publish(daemon, "user.clock", "before expiry")
    rest = client.wait_closed()  # the daemon closes the stream at exp
    client.buffer += rest
    events = client.events(2)
    assert [e["event"] for e in events] == ["message", "token-expired"]
    assert events[1]["id"] == first
    assert json.loads(events[1]["data"]) == {"reason": "expired", "lastEventId": first}


# the auth callback ------------------------------------------------------------------

CALLBACK_MATRIX = [
    # (mode, channels asked, status, error text)
    ("allow", "private-a,private-b", 200, None),
    ("deny", "private-a", 403, "does not allow channel private-a"),
    ("partial", "private-a,private-b", 403, "does not allow channel private-b"),
    ("refuse", "private-a", 403, "does not allow channel private-a"),
    ("slow", "private-a", 503, "no answer within 2 s"),
    ("error", "private-a", 503, "answered 500"),
    ("garbage", "private-a", 503, "unreadable answer"),
]


def test_the_auth_callback_decides_and_fails_closed(daemon, auth_app):
    healthy = SSEClient(daemon.port, "channels=public.news")
    for n, (mode, channels, status, error) in enumerate(CALLBACK_MATRIX):
        auth_app.mode = mode
        auth_app.requests.clear()
        started = time.monotonic()
        got, _, body = answer(daemon.port, f"channels={channels}",
                              {"Cookie": "sessionid=abc", "Authorization": "Basic dXNlcg=="})
        took = time.monotonic() - started
        assert got == status, (mode, body)
        if status == 200:
            body.close()
        else:
            assert error in body["error"], (mode, body)
        request = auth_app.requests[0]
        assert request["cookie"] == "sessionid=abc"
        assert request["authorization"] == "Basic dXNlcg=="
        assert request["body"]["channels"] == channels.split(",")
        assert request["body"]["address"] == "127.0.0.1"
        if mode == "slow":
            assert took < 3.0  # --auth-timeout=2 (1 s flaked under the full suite's load)
            auth_app.release.set()
        # a healthy subscriber keeps receiving, whatever the application did
        publish(daemon, "public.news", f"still here {n}")
        assert healthy.events(n + 1)[-1]["data"] == f"still here {n}"
    healthy.close()


def test_callback_answers_are_cached_for_their_ttl(daemon, auth_app):
    auth_app.mode = "cached"
    auth_app.requests.clear()
    for _ in range(3):
        status, _, client = answer(daemon.port, "channels=private-cached",
                                   {"Cookie": "sessionid=cached"})
        assert status == 200
        client.close()
    assert len(auth_app.requests) == 1
    status, _, client = answer(daemon.port, "channels=private-cached",
                               {"Cookie": "sessionid=someone-else"})
    assert status == 200 and len(auth_app.requests) == 2
    client.close()


def test_an_application_that_is_down_fails_closed(tmp_path):
    down = Daemon(tmp_path, "--policies=private-*=callback",
                  f"--auth-url=http://127.0.0.1:{free_port()}/auth", "--auth-timeout=1")
    try:
        for _ in range(2):
            status, _, body = answer(down.port, "channels=private-a")
            assert status == 503 and "could not decide" in body["error"]
        status, _, client = answer(down.port, "channels=public")
        assert status == 200
        client.close()
    finally:
        down.stop()
    outage = [line for line in down.log if "refusing its channels" in line]
    assert len(outage) == 1  # one warning for the outage, not one per request
    assert "Traceback" not in "".join(down.log)


# publishing -------------------------------------------------------------------------

def test_publish_matrix(daemon):
    def post(headers=None, **fields):
        body = json.dumps({"channel": "public.pub", "data": "x", **fields})
        return daemon.request("POST", "/publish", body,
                              {"Content-Type": "application/json", **(headers or {})})

    assert post()[0] == 401
    assert post(key="wrong")[0] == 401
    assert post({"Authorization": "Bearer wrong"})[0] == 401
    assert post(key=PUBLISH_KEY)[0] == 200
    assert post({"Authorization": f"Bearer {PUBLISH_KEY}"})[0] == 200
    assert post({"Authorization": f"Bearer {mint(publish=['public.*'])}"})[0] == 200
    status, body = post({"Authorization": f"Bearer {mint(publish=['user.*'])}"})
    assert status == 403 and body["channel"] == "public.pub"
    status, body = post({"Authorization": f"Bearer {mint(channels=['public.*'])}"})
    assert status == 403  # a reader's token publishes nothing
    status, body = post({"Authorization": f"Bearer {mint(publish=['public.*'], ttl=-1)}"})
    assert status == 401 and "expired" in body["error"]


def test_the_python_client_publishes_with_a_token_it_made(daemon):
    token = make_token(SECRET, publish=["public.*"], ttl=60, audience=AUDIENCE)
    MINTED.append(token)
    answer_ = send_event("public.made", {"n": 1}, url=f"http://127.0.0.1:{daemon.port}",
                         token=token)
    assert answer_[0].channel == "public.made" and answer_[0].id
    with pytest.raises(PublishError) as info:
        send_event("user.x", "no", url=f"http://127.0.0.1:{daemon.port}", token=token)
    assert info.value.status == 403


def test_statistics_hide_channel_names_without_the_key(daemon):
    client = SSEClient(daemon.port, "channels=public.stats")
    status, stats = daemon.request("GET", "/stats")
    assert status == 200 and stats["subscriptions"] == [] and stats["connections"] >= 1
    status, listed = daemon.request("GET", "/stats/channels")
    assert listed == []
    status, stats = daemon.request("GET", "/stats", headers={
        "Authorization": f"Bearer {PUBLISH_KEY}"})
    assert ["public.stats", 1] in stats["subscriptions"]
    client.close()


# patterns never reach further than names ----------------------------------------------

#: Each pattern, and a public channel it matches (where the test's end marker goes).
PATTERNS = {"*": "public.end", "*alice": "public.alice", "priv*": "privpublic",
            "user*": "users", "notify*": "notify.public", "closed*": "closedpub"}


def test_patterns_reach_only_what_names_would_live_and_in_replay(daemon, auth_app):
    auth_app.mode = "deny"  # the application allows no private-* channel to anyone here
    before = publish(daemon, "public.start", "start")
    secrets = ["user.feed", "notify#alice", "private-alice", "closed.x"]
    for channel in secrets:
        publish(daemon, channel, "SECRET " + channel)
    clients = [(pattern, SSEClient(daemon.port, f"channels={pattern}", headers))
               for pattern in PATTERNS for headers in ({}, {"Last-Event-Id": before})]
    for channel in secrets:
        publish(daemon, channel, "SECRET " + channel)
    for pattern, marker in PATTERNS.items():
        publish(daemon, marker, "end " + pattern)
    for pattern, client in clients:
        got = [e["data"] for e in read_until(client, "end " + pattern)]
        assert got[-1] == "end " + pattern
        assert not [d for d in got if d.startswith("SECRET")], (pattern, got)
        client.close()
    # alice, with her token, reaches her own channels through a pattern, no one else's
    token = mint(sub="alice", channels=["user.feed"])
    alice = SSEClient(daemon.port, f"channels=*&token={token}", {"Last-Event-Id": before})
    publish(daemon, "notify#bob", "SECRET for bob")
    publish(daemon, "public.end", "alice's end")
    got = [e["data"] for e in read_until(alice, "alice's end") if e["data"].startswith("S")]
    assert got == ["SECRET user.feed", "SECRET notify#alice"] * 2
    alice.close()


def test_the_app_hook_of_the_2013_example_no_longer_leaks_through_patterns(tmp_path):
    """The attack of the issue: extras/custom_app.py guards private:NAME in authorize(),
    and ?channels=*alice used to receive private:alice live and in replay."""
    from extras.custom_app import token_for
    example = Daemon(tmp_path, "--app=extras.custom_app.App", "--http-secret=s3cret")
    try:
        def pub(channel, message):
            status, body = example.publish_form(f"channel={channel}&message={message}"
                                                "&key=s3cret")
            assert status == 200
            return body["events"][0]["id"]

        before = pub("public", "start")
        pub("private:alice", "SECRET-FOR-ALICE")
        clients = [SSEClient(example.port, f"channels={p}", headers)
                   for p in ("*alice", "priv*", "*")
                   for headers in ({}, {"Last-Event-Id": before})]
        pub("private:alice", "SECRET-FOR-ALICE")
        pub("privalice", "end")  # public, and matched by all three patterns
        for client in clients:
            got = [e["data"] for e in read_until(client, "end")]
            assert "SECRET-FOR-ALICE" not in got, got
            client.close()
        mine = SSEClient(example.port, "channels=private:*&token=" +
                         token_for("s3cret", "private:alice"), {"Last-Event-Id": before})
        pub("private:bob", "for bob")
        pub("private:alice", "end")
        assert [e["data"] for e in read_until(mine, "end")] == [
            "SECRET-FOR-ALICE", "SECRET-FOR-ALICE", "end"]
        mine.close()
    finally:
        example.stop()


def test_an_internal_listener_takes_publish_and_statistics_off_the_public_port(tmp_path):
    internal = free_port()
    split = Daemon(tmp_path, f"--internal-port={internal}", "--listen=127.0.0.1")
    try:
        assert split.request("POST", "/publish", "channel=a&message=x")[0] == 404
        assert split.request("GET", "/stats")[0] == 404
        assert split.request("GET", "/metrics")[0] == 404
        client = SSEClient(split.port, "channels=a")
        split.port, public = internal, split.port
        assert split.publish_form("channel=a&message=through the back door")[0] == 200
        status, stats = split.request("GET", "/stats")
        assert status == 200 and ["a", 1] in stats["subscriptions"]
        assert client.events(1)[0]["data"] == "through the back door"
        client.close()
        split.port = public
    finally:
        split.stop()
