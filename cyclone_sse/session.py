"""Admission, written once for every transport (SSE stream, long-poll, WebSocket): what
a subscription may read is decided by ``admit`` (the pattern-replay budget, the gate's
policies, token and auth callback, an ``--app``'s ``authorize`` hook), and ``enter``
opens it with what its patterns may reach and when its token ends it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from cyclone_sse.auth.access import Access, Credentials, Gate
from cyclone_sse.channels import is_pattern

__all__ = ["Access", "Credentials", "admit", "enter"]


def admit(app: Any, credentials: Credentials, channels: list[str], last_id: str | None,
          hook: Any = None) -> Access | defer.Deferred[Access]:
    """The ``Access`` for a subscription to ``channels`` resuming after ``last_id``: at
    once when nothing needs asking, else a Deferred (the auth callback, or ``hook``'s
    ``authorize``: an --app's ``SubscribeHandler``).  A refusal is raised, or the
    Deferred fails with it: 401, 403, 429 (pattern replays), 503 (callback down)."""
    app.admit_replay(channels, last_id)
    gate: Gate = app.gate
    if hook is None or not hook.has_authorize_hook():
        if gate.callback is None:
            return gate.check_now(credentials, channels)
        return gate.check(credentials, channels)
    names = [c for c in channels if not is_pattern(c)]
    d: defer.Deferred[Access] = gate.check(credentials, channels, hook.can_read)
    d.addCallback(lambda access: defer.maybeDeferred(hook.authorize, names)
                  .addCallback(lambda _: access))
    return d


def seconds_left(app: Any, access: Access | None) -> float | None:
    """Seconds until the token behind ``access`` expires (None: it does not)."""
    if access is None or access.expires is None:
        return None
    return max(0.0, access.expires - app.clock.seconds())


def enter(app: Any, subscriber: Any, channels: list[str], last_id: str | None,
          access: Access | None, expire: Callable[[], None] | None = None
          ) -> tuple[Any, defer.Deferred[None]]:
    """Open ``subscriber``'s subscription (an ``ISubscriber``): patterns reach only
    what ``access`` lets it read (names were checked by ``admit``), and ``expire`` is
    called when its token ends.  Returns that timer (None without one), for the
    transport to cancel, and the Deferred that fires once the subscription is live."""
    timer = None
    if access is not None:
        if any(is_pattern(c) for c in channels):
            subscriber.access = access
        if access.expires is not None and expire is not None:
            timer = app.clock.callLater(seconds_left(app, access), expire)
    return timer, app.subscriptions.open(subscriber, channels, last_id)
