"""Channel policies: which channels are public, which need a token, which are asked of
the application (the auth callback), which are closed to subscribers, which accept
publishes from subscribers and which keep presence (``--policies``, ``--default-policy``).

A rule is ``PATTERN=KIND[+publish][+presence]``; rules are tried in order and the first whose
pattern matches the channel decides; ``--default-policy`` covers the rest.  With no rule
and the default ``public`` every channel is public, as in 2013.

A channel whose name has a ``#`` is *user-limited*, whatever its policy: ``notify#42``
is readable only with a token whose ``sub`` is ``42``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cyclone_sse.channels import check_subscription, compile_pattern
from cyclone_sse.errors import InvalidChannel

PUBLIC = "public"
TOKEN = "token"
CALLBACK = "callback"
DENY = "deny"
KINDS = (PUBLIC, TOKEN, CALLBACK, DENY)
#: What may follow a kind: WebSocket clients publish, and presence is kept.
PUBLISH = "publish"
PRESENCE = "presence"
MODIFIERS = (PUBLISH, PRESENCE)
#: Separates a user-limited channel's name from the one user who may read it.
USER_MARK = "#"


def user_of(channel: str) -> str | None:
    """The user a channel is limited to, or None: everything after its first ``#``
    (``notify#42`` → ``42``, ``#42`` → ``42``, ``notify#a#b`` → ``a#b``, so a user
    name holding ``#`` never names another user).  ``notify#`` → ``""``, a user no
    token has: nobody may read it."""
    _, mark, user = channel.partition(USER_MARK)
    return user if mark else None


@dataclass(frozen=True)
class Policy:
    """What a channel's rule says."""

    kind: str
    client_publish: bool = False
    presence: bool = False

    @classmethod
    def parse(cls, spec: str) -> Policy | None:
        """``KIND[+publish][+presence]`` (None: not that)."""
        kind, *modifiers = spec.split("+")
        if kind not in KINDS or any(m not in MODIFIERS for m in modifiers):
            return None
        return cls(kind, PUBLISH in modifiers, PRESENCE in modifiers)


@dataclass(frozen=True)
class Rule:
    """One ``PATTERN=KIND[+publish][+presence]``."""

    pattern: str
    matcher: re.Pattern[str]
    policy: Policy


class PolicyTable:
    """The configured rules, asked per channel."""

    def __init__(self, rules: list[Rule], default: Policy) -> None:
        self.rules = rules
        self.default = default
        self._cache: dict[str, Policy] = {}

    @classmethod
    def parse(cls, text: str, default: str = PUBLIC) -> PolicyTable:
        """``"public.*=public, user.*=token, chat.*=token+publish+presence"``;
        ValueError names the rule it cannot read."""
        rules = []
        for item in re.split(r"[,\s]+", text.strip()):
            if not item:
                continue
            pattern, eq, spec = item.partition("=")
            policy = Policy.parse(spec) if eq else None
            if policy is None:
                raise ValueError(f"--policies: cannot read {item!r}: write "
                                 f"PATTERN=KIND[+publish][+presence], KIND one of "
                                 f"{', '.join(KINDS)}")
            try:
                check_subscription(pattern, "policies")
            except InvalidChannel as exc:
                raise ValueError(f"--policies: {item!r}: {exc}") from None
            rules.append(Rule(pattern, compile_pattern(pattern), policy))
        default_policy = Policy.parse(default)
        if default_policy is None:
            raise ValueError(f"--default-policy={default}: choose one of {', '.join(KINDS)} "
                             "(optionally +publish, +presence)")
        return cls(rules, default_policy)

    @property
    def all_public(self) -> bool:
        return self.default.kind == PUBLIC and all(r.policy.kind == PUBLIC for r in self.rules)

    @property
    def uses(self) -> set[str]:
        return {self.default.kind, *(r.policy.kind for r in self.rules)}

    @property
    def keeps_presence(self) -> bool:
        """Whether any channel keeps presence (then the daemon tracks it)."""
        return self.default.presence or any(r.policy.presence for r in self.rules)

    def of(self, channel: str) -> Policy:
        """The policy of one concrete channel."""
        found = self._cache.get(channel)
        if found is None:
            found = self.default
            for rule in self.rules:
                if rule.matcher.match(channel):
                    found = rule.policy
                    break
            if len(self._cache) >= 10000:
                self._cache.clear()
            self._cache[channel] = found
        return found
