"""What publishing raises: one base class, one subclass per kind of refusal."""

from __future__ import annotations


class PublishError(Exception):
    """The event was not published.  ``status`` is the daemon's HTTP status (None when
    no answer came), ``reason`` its explanation."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(f"{status}: {reason}" if status else reason)
        self.reason = reason
        self.status = status


class BadRequest(PublishError):
    """400: a channel name, event name or body the daemon refuses; fix the call."""


class Unauthorized(PublishError):
    """401: no publish key or token, or a wrong one."""


class Forbidden(PublishError):
    """403: the token may not publish to that channel."""


class PayloadTooLarge(PublishError):
    """413: the body is over the daemon's ``--max-body``."""


class Unavailable(PublishError):
    """The daemon (or Redis, or RabbitMQ) could not be reached or did not answer in time,
    or answered 503.  Safe to retry with the same ``id``."""


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 413: PayloadTooLarge,
              503: Unavailable}


def for_status(status: int, reason: str) -> PublishError:
    """The exception for an HTTP refusal."""
    return _BY_STATUS.get(status, PublishError)(reason, status)
