"""Limits on what clients may take at once: open connections (in all and per address,
with a reserve for operations) and the rate of expensive subscriptions."""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from zope.interface import implementer

log = Logger()

#: Connections kept past --max-connections for the paths below.
CONNECTION_RESERVE = 32
#: What a saturated daemon still answers: statistics and health checks, so monitoring
#: sees it, and publishes, so the streams it already holds keep being fed.
RESERVED_PATHS = frozenset({"/stats", "/stats/channels", "/metrics", "/healthz", "/readyz",
                            "/publish"})
#: Seconds a refused client is told to wait (Retry-After).
RETRY_AFTER = 5


def _open_file_limit() -> int:
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ConnectionLimits:
    """Open connections, in all and per client address, and who is over the limits.

    ``--max-connections=0`` means the open-file limit (read at the first connection,
    after start-up raised it) less ``2 * CONNECTION_RESERVE`` for everything else."""

    def __init__(self, max_connections: int, max_per_address: int) -> None:
        self.configured = max_connections
        self.max_per_address = max_per_address
        self.reserve = CONNECTION_RESERVE
        self.open = 0
        self.by_address: dict[str, int] = {}
        self.refusing = False  # an episode of refusals is under way (logged once)
        self.refused = 0
        self.at_file_limit = False  # an episode of EMFILE closes is under way
        self.closed_at_file_limit = 0
        self._max: int | None = max_connections or None

    @property
    def max_connections(self) -> int:
        if self._max is None:
            self._max = max(1, _open_file_limit() - 2 * CONNECTION_RESERVE)
        return self._max

    def admit(self, address: str) -> str | None:
        """Count a new connection; say why it is over a limit (None: it is not)."""
        if self.at_file_limit:  # a connection was accepted: the episode is over
            self.at_file_limit = False
            log.info("accepting connections again ({count} closed at the open-file limit "
                     "so far)", count=self.closed_at_file_limit)
        self.open += 1
        count = self.by_address[address] = self.by_address.get(address, 0) + 1
        if self.open > self.max_connections:
            return "the daemon is at its connection limit"
        if self.max_per_address and count > self.max_per_address:
            return "too many connections from your address"
        if self.refusing and self.open < 0.9 * self.max_connections:
            self.refusing = False
            log.info("below the connection limit again ({open} open)", open=self.open)
        return None

    def beyond_reserve(self) -> bool:
        return self.open > self.max_connections + self.reserve

    def refuse(self, why: str) -> None:
        self.refused += 1
        if not self.refusing:
            self.refusing = True
            log.warn("answering 503 to new connections: {why} ({open} open, limit "
                     "{limit})", why=why, open=self.open, limit=self.max_connections)

    def release(self, address: str) -> None:
        self.open -= 1
        left = self.by_address.get(address, 1) - 1
        if left:
            self.by_address[address] = left
        else:
            self.by_address.pop(address, None)

    @property
    def saturated(self) -> bool:
        return self.open >= self.max_connections

    def closed_by_the_kernel_limit(self) -> None:
        """A listening port closed a connection it could not keep (EMFILE)."""
        self.closed_at_file_limit += 1
        if not self.at_file_limit:
            self.at_file_limit = True
            log.warn("the process is at its open-file limit: new connections are closed "
                     "unanswered until one ends (raise LimitNOFILE, or lower "
                     "--max-connections so they get 503 instead)")


#: What Twisted's listening ports log at the open-file limit (``twisted.internet.tcp``'s
#: ``_accept``): a line for each socket it closes, and around each recovery.
_ACCEPT_NOISE = ("EMFILE encountered", "Re-reserving EMFILE recovery")
_ACCEPT_CLOSED = ("EMFILE recovery: Closed socket", "Could not accept new connection")


@implementer(ILogObserver)
class AcceptErrors:
    """Observer for Twisted's listening ports: their per-socket lines at the open-file
    limit become a count (``closed_at_file_limit`` in /stats) and one line per
    episode; everything else they log goes on to the global log."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits

    def __call__(self, event: dict[str, Any]) -> None:
        text = event.get("log_format") or ""
        if text.startswith(_ACCEPT_CLOSED):
            self.limits.closed_by_the_kernel_limit()
        elif not text.startswith(_ACCEPT_NOISE):
            globalLogPublisher(event)


def quiet_accept_errors(limits: ConnectionLimits) -> None:
    """Route what every listening TCP port logs through ``AcceptErrors``.  ``Port``
    takes its logger from the private class attribute ``_logger`` (read again at each
    accept; tests/test_quality.py checks it and the lines matched above)."""
    namespace = tcp.Port._logger.namespace
    tcp.Port._logger = Logger(namespace=namespace, observer=AcceptErrors(limits))


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``take`` spends one."""

    def __init__(self, clock: Any, rate: float, burst: float) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = clock.seconds()
        self.refused = 0

    def take(self) -> bool:
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.refused += 1
        return False
