"""What the Redis and AMQP links share: reconnecting quietly, logging each outage once."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.logger import ILogObserver, Logger
from zope.interface import implementer

log = Logger()

#: Reconnection backoff: first retry after 0.2 s, growing to one every 5 s.
RETRY_POLICY = backoffPolicy(initialDelay=0.2, maxDelay=5.0)


@implementer(ILogObserver)
def _discard(event: dict[str, Any]) -> None:
    pass


class QuietClientService(ClientService):
    """ClientService logs every retry; an ``Outage`` logs each outage once instead."""

    _log = Logger(observer=_discard)


class Outage:
    """One warning when a link goes down, one line when it is up or back."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.ongoing = False

    def report(self, why: str) -> None:
        if not self.ongoing:
            self.ongoing = True
            log.warn("{what}: {why}; reconnecting", what=self.what, why=why)

    def lost(self) -> None:
        self.count += 1
        self.report("connection lost")

    def over(self) -> None:
        log.info("{what} is {state}", what=self.what, state="back" if self.ongoing else "up")
        self.ongoing = False
