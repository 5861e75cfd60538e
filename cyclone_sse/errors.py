"""One exception hierarchy; handlers turn these into HTTP statuses at the edge."""

from __future__ import annotations


class CycloneSSEError(Exception):
    """Base of every error cyclone-sse raises on purpose."""

    #: HTTP status a handler answers with when this error reaches the edge.
    status = 500


class BadRequest(CycloneSSEError):
    """The client sent something we refuse; ``field`` names the culprit."""

    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidChannel(BadRequest):
    """A channel name outside the allowed alphabet or length."""


class InvalidEvent(BadRequest):
    """An event field that cannot be framed safely (CR, LF or NUL in id/event)."""


class Unauthorized(CycloneSSEError):
    """A publish without the right secret key."""

    status = 401


class Forbidden(CycloneSSEError):
    """``authorize()`` refused a subscriber."""

    status = 403


class PayloadTooLarge(CycloneSSEError):
    """A body over ``--max-body``."""

    status = 413


class BrokerUnavailable(CycloneSSEError):
    """The upstream broker is down: publishing would silently lose the event."""

    status = 503
