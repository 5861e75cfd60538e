"""Channel policies: which channels are public, which need a token, which are asked of
the application (the auth callback), which are closed to subscribers, and which accept
publishes from subscribers (``--policies``, ``--default-policy``).

A rule is ``PATTERN=KIND[+publish]``; rules are tried in order and the first whose
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
#: Separates a user-limited channel's name from the one user who may read it.
USER_MARK = "#"


def user_of(channel: str) -> str | None:
    """The user a channel is limited to (``notify#42`` → ``42``), or None."""
    name, mark, user = channel.rpartition(USER_MARK)
    return user if mark and name and user else None


@dataclass(frozen=True)
class Rule:
    """One ``PATTERN=KIND[+publish]``."""

    pattern: str
    matcher: re.Pattern[str]
    kind: str
    client_publish: bool


@dataclass(frozen=True)
class Policy:
    """What a channel's rule says."""

    kind: str
    client_publish: bool = False


class PolicyTable:
    """The configured rules, asked per channel."""

    def __init__(self, rules: list[Rule], default: Policy) -> None:
        self.rules = rules
        self.default = default
        self._cache: dict[str, Policy] = {}

    @classmethod
    def parse(cls, text: str, default: str = PUBLIC) -> PolicyTable:
        """``"public.*=public, user.*=token, chat.*=token+publish"``; ValueError names
        the rule it cannot read."""
        rules = []
        for item in re.split(r"[,\s]+", text.strip()):
            if not item:
                continue
            pattern, eq, spec = item.partition("=")
            kind, plus, modifier = spec.partition("+")
            if not eq or kind not in KINDS or (plus and modifier != "publish"):
                raise ValueError(f"--policies: cannot read {item!r}: write PATTERN=KIND or "
                                 f"PATTERN=KIND+publish, KIND one of {', '.join(KINDS)}")
            try:
                check_subscription(pattern, "policies")
            except InvalidChannel as exc:
                raise ValueError(f"--policies: {item!r}: {exc}") from None
            rules.append(Rule(pattern, compile_pattern(pattern), kind, bool(plus)))
        kind, plus, modifier = default.partition("+")
        if kind not in KINDS or (plus and modifier != "publish"):
            raise ValueError(f"--default-policy={default}: choose one of {', '.join(KINDS)} "
                             "(optionally +publish)")
        return cls(rules, Policy(kind, bool(plus)))

    @property
    def all_public(self) -> bool:
        return self.default.kind == PUBLIC and all(r.kind == PUBLIC for r in self.rules)

    @property
    def uses(self) -> set[str]:
        return {self.default.kind, *(r.kind for r in self.rules)}

    def of(self, channel: str) -> Policy:
        """The policy of one concrete channel."""
        found = self._cache.get(channel)
        if found is None:
            found = self.default
            for rule in self.rules:
                if rule.matcher.match(channel):
                    found = Policy(rule.kind, rule.client_publish)
                    break
            if len(self._cache) >= 10000:
                self._cache.clear()
            self._cache[channel] = found
        return found
