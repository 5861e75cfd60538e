"""Policies, tokens and per-channel access — pure, and through the app in memory."""

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from cyclone_sse.auth.access import Credentials, Gate
from cyclone_sse.auth.policy import CALLBACK, DENY, PUBLIC, TOKEN, PolicyTable, user_of
from cyclone_sse.auth.tokens import TokenVerifier
from cyclone_sse.errors import Forbidden, InvalidToken
from tests.memory import Connection, make_app, publish, subscribe

SECRET = "a-test-secret-of-at-least-32-bytes!"


def token(sub="alice", channels=None, publish=None, ttl=3600, key=SECRET, alg="HS256",
          **claims):
    payload = {"exp": int(time.time()) + ttl, **claims}
    if sub is not None:
        payload["sub"] = sub
    if channels is not None:
        payload["channels"] = channels
    if publish is not None:
        payload["publish"] = publish
    return jwt.encode(payload, key, algorithm=alg)


# policies ---------------------------------------------------------------------------


def test_policies_first_matching_rule_decides_then_the_default():
    table = PolicyTable.parse("public.*=public, user.*=token,private-*=callback "
                              "chat.*=token+publish,x.*=deny", default="token")
    assert table.of("public.news").kind == PUBLIC
    assert table.of("user.1").kind == TOKEN and not table.of("user.1").client_publish
    assert table.of("chat.room").client_publish
    assert table.of("private-a").kind == CALLBACK
    assert table.of("x.y").kind == DENY
    assert table.of("other").kind == TOKEN  # the default
    assert PolicyTable.parse("").all_public and not table.all_public


@pytest.mark.parametrize("text", ["a=secret", "a", "=public", "a b=public", "a=token+x"])
def test_unreadable_policies_are_refused_naming_the_rule(text):
    with pytest.raises(ValueError, match="--policies"):
        PolicyTable.parse(text)


def test_user_limited_channels():
    assert user_of("notify#42") == "42"
    # everything after the first '#': a user name holding '#' names no other user
    assert user_of("a#b#c") == "b#c" and user_of("#42") == "42"
    assert user_of("notify") is None and user_of("x#") == ""  # a user no token is


# tokens -----------------------------------------------------------------------------


def keypair(kind):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048) \
        if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return pem, public


def hs256_forged_with(key):
    """The HS/RS confusion attack: a token HMAC-signed with the (public) PEM text.
    PyJWT refuses to make one, so it is made by hand."""
    from extras.publisher import make_token
    return make_token(key, sub="alice", channels=["*"])


@pytest.mark.filterwarnings("ignore:The HMAC key")  # the too-short case, on purpose
def test_hmac_rsa_and_ec_tokens_verify_with_their_own_key_only():
    for kind, alg in (("rsa", "RS256"), ("ec", "ES256")):
        private, public = keypair(kind)
        verifier = TokenVerifier(SECRET, public)
        claims = verifier.verify(token(channels=["a", "b.*"], key=private, alg=alg))
        assert claims.sub == "alice" and claims.channels.covers("b.x")
        assert not claims.channels.covers("c")
        # the public key used as an HMAC secret: HS256 is checked with the secret only
        forged = hs256_forged_with(public)
        with pytest.raises(InvalidToken, match="bad signature"):
            verifier.verify(forged)
    long_secret = SECRET * 2
    assert TokenVerifier(long_secret).verify(token(alg="HS512", key=long_secret)).sub == "alice"
    with pytest.raises(InvalidToken, match="'HS512' is not accepted"):  # secret too short
        TokenVerifier(SECRET).verify(token(alg="HS512", key=SECRET))
    with pytest.raises(InvalidToken, match="not accepted"):
        TokenVerifier(SECRET).verify(token(key=keypair("rsa")[0], alg="RS256"))


@pytest.mark.parametrize("make,why", [
    (lambda: token(ttl=-10), "expired"),
    (lambda: token(nbf=int(time.time()) + 600), "not valid yet"),
    (lambda: token(key="another-secret-of-at-least-32-bytes"), "bad signature"),
    (lambda: jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, None, algorithm="none"),
     "'none' is not accepted"),
    (lambda: token()[:-4] + "AAAA", "bad signature"),
    (lambda: "not.a.token", "malformed"),
    (lambda: "garbage", "malformed"),
    (lambda: jwt.encode({"sub": "a"}, SECRET, algorithm="HS256"), "no 'exp' claim"),
    (lambda: token(channels=5), "'channels' claim must be a list"),
    (lambda: token(aud="someone-else"), "another audience"),
])
def test_bad_tokens_are_refused_with_a_reason(make, why):
    verifier = TokenVerifier(SECRET, audience="cyclone") if "audience" in why else \
        TokenVerifier(SECRET)
    with pytest.raises(InvalidToken) as info:
        verifier.verify(make())
    assert why in info.value.description


def test_a_tampered_payload_fails_the_signature():
    header, payload, signature = token(channels=["mine"]).split(".")
    import base64
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["channels"] = ["*"]
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken, match="bad signature"):
        TokenVerifier(SECRET).verify(f"{header}.{forged}.{signature}")


# the gate ---------------------------------------------------------------------------


def check(gate, channels, tok=None):
    """The gate's decision, through ``check`` and ``check_now`` (the lean subscribe
    path's), which must agree."""
    result = []
    gate.check(Credentials(tok), channels).addBoth(result.append)
    try:
        at_once = gate.check_now(Credentials(tok), channels)
    except Exception as exc:
        at_once = exc
    if isinstance(result[0], Exception) or hasattr(result[0], "value"):
        assert type(at_once) is type(result[0].value) and \
            str(at_once) == str(result[0].value)
        raise result[0].value
    assert vars(at_once).keys() == vars(result[0]).keys()
    assert (at_once.expires, at_once.allowed, at_once.tokens) == \
        (result[0].expires, result[0].allowed, result[0].tokens)
    assert (at_once.claims and at_once.claims.sub) == (result[0].claims and result[0].claims.sub)
    return result[0]


def test_the_gate_refuses_names_and_filters_what_patterns_reach():
    gate = Gate(PolicyTable.parse("user.*=token,closed.*=deny"), TokenVerifier(SECRET))
    with pytest.raises(InvalidToken, match="token is needed"):
        check(gate, ["user.feed"])
    with pytest.raises(Forbidden) as info:
        check(gate, ["user.feed"], token(channels=["user.other"]))
    assert info.value.channel == "user.feed"
    with pytest.raises(Forbidden):
        check(gate, ["notify#bob"], token(sub="alice"))
    with pytest.raises(Forbidden):
        check(gate, ["closed.x"], token(channels=["*"]))
    check(gate, ["user.feed", "notify#alice", "public"], token(channels=["user.*"]))
    anonymous = check(gate, ["*"])  # a pattern subscribes, then reaches only what it may
    assert [c for c in ("public", "user.feed", "notify#alice", "closed.x")
            if anonymous.may_read(c)] == ["public"]
    alice = check(gate, ["*"], token(channels=["user.feed"]))
    assert [c for c in ("public", "user.feed", "user.x", "notify#alice", "notify#bob",
                        "closed.x") if alice.may_read(c)] == ["public", "user.feed",
                                                               "notify#alice"]


def test_without_a_verifier_user_limited_channels_are_closed_and_tokens_ignored():
    gate = Gate(PolicyTable.parse(""))
    with pytest.raises(Forbidden, match="accepts none"):
        check(gate, ["notify#42"])
    assert check(gate, ["news"], "an --app may use ?token= for itself")


# through the application, in memory ------------------------------------------------


def secure_app(**settings):
    settings.setdefault("http_secret", "publish-key")
    return make_app(jwt_secret=SECRET, policies="user.*=token,closed.*=deny", **settings)


def pub(app, channel, data):
    return publish(app, channel=channel, data=data, key="publish-key")


def test_refusals_carry_rfc6750_challenges_and_name_the_channel():
    app = secure_app()
    conn = subscribe(app, "channels=user.feed")
    status, headers, body = conn.head_and_body()
    assert status == 401
    assert headers["www-authenticate"] == ('Bearer error="invalid_token", '
                                           'error_description="a token is needed to read '
                                           'user.feed"')
    status, body = subscribe(app, "channels=user.feed&token=" +
                             token(channels=["user.x"])).json()
    assert status == 403 and body["channel"] == "user.feed"


def test_patterns_never_reach_further_than_names_live_and_in_replay():
    app = secure_app()
    _, first = pub(app, "public", "p0")
    for channel in ("user.feed", "notify#alice", "closed.x"):
        pub(app, channel, "secret " + channel)
    last = first["events"][0]["id"]
    live = subscribe(app, "channels=*")
    replayed = subscribe(app, "channels=*", {"Last-Event-Id": last})
    for channel in ("user.feed", "notify#alice", "closed.x", "public"):
        pub(app, channel, "live " + channel)
    assert [e["data"] for e in live.events()] == ["live public"]
    assert [e["data"] for e in replayed.events()] == ["live public"]
    alice = subscribe(app, "channels=*&token=" + token(channels=["user.feed"]),
                      {"Last-Event-Id": last})
    pub(app, "public", "end")
    assert [e["data"] for e in alice.events()] == [
        "secret user.feed", "secret notify#alice", "live user.feed", "live notify#alice",
        "live public", "end"]


def test_the_authorize_hook_also_guards_what_patterns_reach():
    from cyclone_sse.handlers import SubscribeHandler

    class OnlyMine(SubscribeHandler):
        def authorize(self, channels):
            for channel in channels:
                if channel.startswith("private:") and channel != "private:" + \
                        self.get_argument("user", ""):
                    raise Forbidden(f"not yours: {channel}", channel)

    from twisted.internet.task import Clock

    from cyclone_sse.app import App

    class HookedApp(App):
        def build_handlers(self):
            return [(r"/", OnlyMine), *super().build_handlers()[1:]]

    clock = Clock()
    app = HookedApp({}, reactor=clock)
    app.start()
    publish(app, channel="private:bob", data="bob's")
    mine = subscribe(app, "channels=private:*&user=alice", {"Last-Event-Id": "x-0"})
    publish(app, channel="private:bob", data="bob's again")
    publish(app, channel="private:alice", data="alice's")
    assert [e["data"] for e in mine.events() if e["event"] == "message"] == ["alice's"]
    status, _ = subscribe(app, "channels=private:bob&user=alice").json()
    assert status == 403


def test_a_stream_ends_at_its_tokens_expiry_with_the_id_to_resume_from():
    app = secure_app()
    app.clock.advance(int(time.time()) - app.clock.seconds())  # PyJWT reads the wall clock
    expires = int(app.clock.seconds()) + 30
    tok = jwt.encode({"sub": "a", "channels": ["user.feed"], "exp": expires}, SECRET)
    conn = subscribe(app, "channels=user.feed&token=" + tok)
    pub(app, "user.feed", "one")
    app.clock.advance(expires - app.clock.seconds() - 1)
    assert not conn.transport.disconnecting
    app.clock.advance(1)
    assert conn.transport.disconnecting
    events = conn.events()
    assert events[-1]["event"] == "token-expired"
    assert events[-1]["id"] == events[0]["id"]  # resume after "one"
    assert json.loads(events[-1]["data"]) == {"reason": "expired",
                                              "lastEventId": events[0]["id"]}
    poll = subscribe(app, "channels=user.feed&transport=poll&token=" + jwt.encode(
        {"channels": ["user.feed"], "exp": int(app.clock.seconds()) + 5}, SECRET))
    app.clock.advance(5)  # answered when the token expires, not at --poll-timeout
    assert poll.json()[0] == 200


def test_channel_names_in_statistics_need_the_key_or_the_internal_listener():
    app = secure_app(http_secret="publish-key")
    subscribe(app, "channels=public.a")
    _, stats = Connection(app).send("GET", "/stats").json()
    assert stats["subscriptions"] == [] and stats["connections"] == 1
    _, stats = Connection(app).send("GET", "/stats", headers={
        "Authorization": "Bearer publish-key"}).json()
    assert stats["subscriptions"] == [["public.a", 1]]
    metrics = Connection(app).send("GET", "/metrics").head_and_body()[2]
    assert b"public.a" not in metrics
    internal = make_app(internal_port=9999, jwt_secret=SECRET, policies="user.*=token")
    assert Connection(internal).send("POST", "/publish").head_and_body()[0] == 404
    assert Connection(internal).send("GET", "/stats").head_and_body()[0] == 404
    site = internal.internal_site()
    subscribe(internal, "channels=public.b")
    status, stats = Connection(site).send("GET", "/stats").json()
    assert status == 200 and stats["subscriptions"] == [["public.b", 1]]


def test_publishing_needs_the_key_or_a_token_for_the_channel():
    app = secure_app(http_secret="publish-key")

    def post(channel, auth=None):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = "Bearer " + auth
        return Connection(app).send("POST", "/publish", json.dumps(
            {"channel": channel, "data": "x"}).encode(), headers).head_and_body()

    assert post("a")[0] == 401 and post("a", "wrong")[0] == 401
    assert post("a", "publish-key")[0] == 200
    assert post("news.x", token(publish=["news.*"]))[0] == 200
    status, _, body = post("user.feed", token(publish=["news.*"]))
    assert status == 403 and json.loads(body)["channel"] == "user.feed"
    assert post("news.x", token(channels=["news.*"]))[0] == 403  # a reader's token
    status, headers, _ = post("news.x", token(publish=["news.*"], ttl=-5))
    assert status == 401 and "expired" in headers["www-authenticate"]


def test_tokens_and_keys_never_reach_the_access_log():
    from twisted.logger import globalLogPublisher
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        app = secure_app(access_log=True)
        tok = token(channels=["user.feed"])
        subscribe(app, f"channels=user.feed&token={tok}").close()
        subscribe(app, "channels=user.feed&token=expired.not.valid")
        Connection(app).send("GET", "/stats?key=also-secret")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    from twisted.logger import formatEvent
    text = "\n".join(formatEvent(e) for e in seen)
    assert "user.feed" in text and "token=***" in text
    assert tok not in text and "expired.not.valid" not in text and "also-secret" not in text


def test_start_up_refuses_open_publishing_on_a_public_address():
    from twisted.python import usage

    from cyclone_sse.options import Options
    for argv in (["--listen=0.0.0.0"], ["--use-ssl=0", "-l", "10.1.2.3"]):
        with pytest.raises(usage.UsageError, match="anyone who can reach it could publish"):
            Options().parseOptions(argv)
    for argv in (["--listen=0.0.0.0", "--http-secret=k"],
                 ["--listen=0.0.0.0", "--public-publish"],
                 ["--listen=0.0.0.0", "--internal-port=9000"],
                 ["--listen=0.0.0.0", f"--jwt-secret={SECRET}"]):
        Options().parseOptions(argv)
    with pytest.raises(usage.UsageError, match="RFC 7518"):
        Options().parseOptions(["--jwt-secret=short"])
    with pytest.raises(usage.UsageError, match="needs --jwt-secret"):
        Options().parseOptions(["--policies=a.*=token"])
    with pytest.raises(usage.UsageError, match="needs --auth-url"):
        Options().parseOptions(["--default-policy=callback"])
    for argv, named in ((["--jwt-secret-file=/no/such/file"], "--jwt-secret-file"),
                        (["--jwt-public-key=/no/such/file"], "--jwt-public-key"),
                        (["--jwt-public-key=README.rst"], "not a PEM public key"),
                        (["--auth-url=ftp://x"], "--auth-url")):
        with pytest.raises(usage.UsageError, match=named):
            Options().parseOptions(argv)


def test_the_callback_url_is_logged_without_its_credentials():
    from twisted.internet.task import Clock

    from cyclone_sse.auth.callback import AuthCallback
    callback = AuthCallback(Clock(), "https://app.example/auth?x=1&%6Bey=pa55", 1, 0)
    assert callback.shown == "https://app.example/auth?x=1&%6Bey=***"
    # (user:password@ cannot be sent: --auth-url refuses it at start, test_options)


class _ClosesIdleConnections(Protocol):
    """An application that answers the first request on each connection, keeps it open
    (HTTP/1.1, no ``Connection: close``), and closes it unanswered when a second
    request comes on it: what a server closing idle kept-alive connections does to a
    client that writes just as it closes."""

    def connectionMade(self) -> None:
        self.buffer, self.answered = b"", 0
        self.factory.connections += 1

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            if self.answered:
                self.transport.loseConnection()
                return
            self.answered += 1
            body = b'{"allow": ["private-a"], "ttl": 0}'
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


class TestAuthCallbackConnections(unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_kept_alive_connection_closed_under_a_question_is_asked_again(self):
        from twisted.internet import reactor

        from cyclone_sse.auth.callback import AuthCallback
        factory = Factory.forProtocol(_ClosesIdleConnections)
        factory.connections = 0
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        callback = AuthCallback(reactor, f"http://127.0.0.1:{port.getHost().port}/auth", 5, 0)
        self.addCleanup(callback.pool.closeCachedConnections)
        for _ in range(3):
            allowed = yield callback.ask(["private-a"], None, None, "127.0.0.1", None)
            assert allowed.covers("private-a")
        assert factory.connections == 3 and callback.failures == 0


# who may publish: one ladder for /publish and Pushpin's /publish/ ------------------------

GRIP = "a-grip-control-key-of-32-bytes-or-more"


@pytest.mark.parametrize("credential,status", [
    (None, 401),
    ("Bearer wrong", 401),
    ("Bearer pub-key", 200),
    (f"Bearer {token(publish=['a'])}", 200),
    (f"Bearer {token(publish=['b'])}", 403),  # a token limits the channels
    (f"Bearer {token(publish=['a'], key='another-secret-of-at-least-32-bytes')}", 401),
])
def test_both_publish_endpoints_take_the_same_credentials(credential, status):
    app = make_app(http_secret="pub-key", jwt_secret=SECRET, grip_key=GRIP)
    headers = {"Authorization": credential} if credential else {}
    plain = Connection(app).send("POST", "/publish", b'{"channel": "a", "data": "x"}',
                                 {"Content-Type": "application/json", **headers})
    items = b'{"items": [{"channel": "a", "formats": {"http-stream": {"content": "x"}}}]}'
    pushpin = Connection(app).send("POST", "/publish/", items,
                                   {"Content-Type": "application/json", **headers})
    assert plain.json()[0] == pushpin.json()[0] == status


def test_the_control_key_publishes_on_pushpins_endpoint_only():
    app = make_app(http_secret="pub-key", grip_key=GRIP)
    control = jwt.encode({"iss": "x", "exp": int(time.time()) + 60}, GRIP)
    items = b'{"items": [{"channel": "a", "formats": {"http-stream": {"content": "x"}}}]}'
    for credential in (GRIP, control):
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
        assert Connection(app).send("POST", "/publish/", items, headers).json()[0] == 200
        assert Connection(app).send("POST", "/publish", b'{"channel": "a", "data": "x"}',
                                    headers).json()[0] == 401
