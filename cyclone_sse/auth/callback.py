"""The auth callback (``--auth-url``): the daemon asks the web application whether a
new subscriber may read channels whose policy is ``callback``.

Request: ``POST <auth-url>`` with ``{"channels": [...], "address": "...", "sub": ...}``
and the subscriber's ``Cookie`` and ``Authorization`` headers forwarded.  Answer:
``200 {"allow": [names or patterns], "ttl": seconds}`` (``403`` means none).  Anything
else — a timeout, another status, a body that is not that JSON, a refused connection —
fails closed.  Answers are cached per (cookie, authorization, address, channels) for
``ttl`` seconds (``--auth-cache`` when the application does not say, at most 300).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from io import BytesIO
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    RequestTransmissionFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers

from cyclone_sse.auth.tokens import ChannelList
from cyclone_sse.errors import AuthUnavailable
from cyclone_sse.httpclient import AnswerTooLarge, failure_reason, quiet_pool, read_body
from cyclone_sse.logs import masked

log = Logger()

#: Longest time an answer is cached, whatever the application says.
MAX_CACHE_SECONDS = 300.0
#: Answers kept at once (the oldest go first).
CACHE_SIZE = 10000
#: Largest answer body read from the application.
MAX_ANSWER = 64 * 1024


class AuthCallback:
    """Asks ``url``; never blocks the reactor, fails closed, logs each outage once."""

    def __init__(self, reactor: Any, url: str, timeout: float, cache_seconds: float) -> None:
        self.reactor = reactor
        self.url = url.encode()
        self.shown = masked(url)  # what log lines show: never a key in its query
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.pool = quiet_pool(reactor, MAX_ANSWER)
        self.agent = Agent(reactor, connectTimeout=timeout, pool=self.pool)
        self._cache: OrderedDict[tuple[Any, ...], tuple[float, ChannelList]] = OrderedDict()
        self.failing = False
        self.asked = 0
        self.failures = 0

    def ask(self, channels: list[str], cookie: str | None, authorization: str | None,
            address: str, sub: str | None) -> defer.Deferred[ChannelList]:
        key = (cookie, authorization, address, sub, tuple(channels))
        cached = self._cache.get(key)
        if cached is not None and cached[0] > self.reactor.seconds():
            return defer.succeed(cached[1])
        self.asked += 1
        headers = Headers({b"Content-Type": [b"application/json"],
                           b"User-Agent": [b"cyclone-sse auth callback"]})
        for name, value in ((b"Cookie", cookie), (b"Authorization", authorization)):
            if value:
                headers.addRawHeader(name, value.encode("latin-1", "replace"))
        body = json.dumps({"channels": channels, "address": address, "sub": sub}).encode()
        d = self._post(headers, body)
        # A kept-alive connection the application closed while idle fails the request
        # before any answer: asked once more, on a new connection.  (Twisted's pool
        # retries only idempotent methods; this question changes nothing, so it may.)
        d.addErrback(self._post_again, headers, body)
        d.addCallback(self._read)
        d.addTimeout(self.timeout, self.reactor, onTimeoutCancel=self._timed_out)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(key,))
        return d

    def _post(self, headers: Headers, body: bytes) -> defer.Deferred[Any]:
        return self.agent.request(b"POST", self.url, headers, FileBodyProducer(BytesIO(body)))

    def _post_again(self, failure: Failure, headers: Headers, body: bytes) -> Any:
        failure.trap(ResponseNeverReceived, RequestTransmissionFailed)
        reasons = getattr(failure.value, "reasons", ())  # (the failures under it)
        if any(reason.check(defer.CancelledError) for reason in reasons):
            return failure  # (the question timed out: not asked again)
        return self._post(headers, body)

    def _timed_out(self, result: object, timeout: float) -> Failure:
        return Failure(self._unavailable(f"no answer within {timeout:g} s"))

    def _read(self, response: Any) -> defer.Deferred[tuple[int, bytes]]:
        # (a timeout cancels this read too, which closes the connection: an application
        # that stalls mid-answer keeps nothing open)
        return read_body(response, MAX_ANSWER).addCallback(lambda body: (response.code,
                                                                         body))

    def _answered(self, answer: tuple[int, bytes], key: tuple[Any, ...]) -> ChannelList:
        status, body = answer
        if status == 403:
            allowed, ttl = ChannelList([]), self.cache_seconds
        elif status != 200:
            raise self._unavailable(f"the application answered {status}")
        else:
            allowed, ttl = self._parse(body)
        if self.failing:
            self.failing = False
            log.info("auth callback {url} answers again", url=self.shown)
        if ttl > 0:
            self._cache[key] = (self.reactor.seconds() + min(ttl, MAX_CACHE_SECONDS), allowed)
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return allowed

    def _parse(self, body: bytes) -> tuple[ChannelList, float]:
        try:
            answer = json.loads(body)
            allow = answer["allow"]
            ttl = float(answer.get("ttl", self.cache_seconds))
            if not isinstance(allow, list) or not all(isinstance(c, str) for c in allow):
                raise ValueError("'allow' is not a list of channel names")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._unavailable(f"unreadable answer ({exc.__class__.__name__})") from None
        return ChannelList(allow), ttl

    def _failed(self, failure: Any) -> Any:
        if failure.check(AuthUnavailable):
            return failure
        failure = failure_reason(failure)
        if failure.check(AnswerTooLarge):
            raise self._unavailable(f"its answer was too large: {failure.value}")
        raise self._unavailable(failure.type.__name__)

    def _unavailable(self, why: str) -> AuthUnavailable:
        self.failures += 1
        if not self.failing:
            self.failing = True
            log.warn("auth callback {url} failed: {why}; refusing its channels until it "
                     "answers", url=self.shown, why=why)
        return AuthUnavailable(f"the auth callback could not decide: {why}")
