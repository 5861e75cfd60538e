"""The gate every subscription passes, and the ``Access`` it grants: what one connection
may read, decided per channel — for the names it asked for when it subscribes, and for
every channel a pattern reaches, live and in replay, before anything is written.

A pattern never reaches further than names: ``*`` receives only the channels its
subscriber could have subscribed to by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from cyclone_sse.auth.callback import AuthCallback
from cyclone_sse.auth.policy import CALLBACK, DENY, TOKEN, PolicyTable, user_of
from cyclone_sse.auth.tokens import ChannelList, Claims, TokenVerifier
from cyclone_sse.channels import is_pattern
from cyclone_sse.errors import Forbidden, InvalidToken

#: Per-connection decisions remembered (channels reached by its patterns).
DECISIONS_KEPT = 1024

Hook = Callable[[str], bool]


@dataclass(frozen=True)
class Credentials:
    """What a subscriber presented: a token and what the auth callback is forwarded."""

    token: str | None = None
    cookie: str | None = None
    authorization: str | None = None
    address: str = ""


class Access:
    """What one connection may read (``may_read``), and until when (``expires``)."""

    def __init__(self, policies: PolicyTable, claims: Claims | None,
                 allowed: ChannelList | None, hook: Hook | None, tokens: bool) -> None:
        self.policies = policies
        self.claims = claims
        self.allowed = allowed  # what the auth callback allowed, if it was asked
        self.hook = hook        # the application's own per-channel check (--app)
        self.tokens = tokens    # whether a token could have helped (for 401 vs 403)
        self._decided: dict[str, bool] = {}

    @property
    def expires(self) -> float | None:
        return self.claims.expires if self.claims is not None else None

    def refusal(self, channel: str) -> Exception | None:
        """Why the policy, token or callback refuse ``channel`` (None: they allow it)."""
        policy = self.policies.of(channel)
        if policy.kind == DENY:
            return Forbidden(f"channel {channel} is closed to subscribers", channel)
        claims, user = self.claims, user_of(channel)
        if (user is not None or policy.kind == TOKEN) and claims is None:
            if self.tokens:
                return InvalidToken(f"a token is needed to read {channel}")
            return Forbidden(f"channel {channel} needs a token; this daemon accepts none",
                             channel)
        if user is not None and claims is not None and (not user or claims.sub != user):
            return Forbidden(f"channel {channel} is limited to another user", channel)
        if policy.kind == TOKEN and user is None and claims is not None \
                and not claims.channels.covers(channel):
            return Forbidden(f"the token does not allow channel {channel}", channel)
        if policy.kind == CALLBACK and (self.allowed is None or
                                        not self.allowed.covers(channel)):
            return Forbidden(f"the application does not allow channel {channel}", channel)
        return None

    def may_read(self, channel: str) -> bool:
        """For a channel a pattern reached: policy, token, callback and hook agree."""
        decided = self._decided.get(channel)
        if decided is None:
            decided = self.refusal(channel) is None and (self.hook is None or
                                                         self.hook(channel))
            if len(self._decided) >= DECISIONS_KEPT:
                self._decided.clear()
            self._decided[channel] = decided
        return decided


class Gate:
    """Verifies credentials and asks the callback; handlers call ``check`` only."""

    def __init__(self, policies: PolicyTable, verifier: TokenVerifier | None = None,
                 callback: AuthCallback | None = None) -> None:
        self.policies = policies
        self.verifier = verifier
        self.callback = callback

    @property
    def restricted(self) -> bool:
        """Whether anything here is private (then /stats hides channel names)."""
        return not self.policies.all_public or self.verifier is not None \
            or self.callback is not None

    def claims_of(self, credentials: Credentials) -> Claims | None:
        """The verified claims of the presented token (``InvalidToken`` if it is bad);
        without a verifier a token is none of our business (an --app may use it)."""
        if credentials.token is None or self.verifier is None:
            return None
        return self.verifier.verify(credentials.token)

    def check(self, credentials: Credentials, channels: list[str],
              hook: Hook | None = None) -> defer.Deferred[Access]:
        """The ``Access`` for a subscription to ``channels`` (names and patterns), or a
        failure: ``InvalidToken`` (401), ``Forbidden`` (403), ``AuthUnavailable`` (503)."""
        try:
            claims = self.claims_of(credentials)
        except InvalidToken as exc:
            return defer.fail(exc)
        names = [c for c in channels if not is_pattern(c)]
        asks = self.callback is not None and (
            len(names) < len(channels)
            or any(self.policies.of(n).kind == CALLBACK for n in names))
        if asks:
            assert self.callback is not None
            d: defer.Deferred[Any] = self.callback.ask(
                channels, credentials.cookie, credentials.authorization, credentials.address,
                claims.sub if claims is not None else None)
        else:
            d = defer.succeed(None)
        d.addCallback(self._grant, claims, names, hook)
        return d

    def check_now(self, credentials: Credentials, channels: list[str]) -> Access:
        """``check`` for a gate that asks no callback: the ``Access`` at once, or the
        exception (the lean subscribe path: no Deferred per connection)."""
        if self.callback is not None:
            raise RuntimeError("this gate asks the auth callback: use check")
        return self._grant(None, self.claims_of(credentials),
                           [c for c in channels if not is_pattern(c)], None)

    def _grant(self, allowed: ChannelList | None, claims: Claims | None, names: list[str],
               hook: Hook | None) -> Access:
        access = Access(self.policies, claims, allowed, hook, self.verifier is not None)
        for name in names:
            refused = access.refusal(name)
            if refused is not None:
                raise refused
        return access
