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


class TooDeep(BadRequest):
    """JSON nested deeper than a client's JSON may be (``checks.MAX_JSON_DEPTH``)."""


class InvalidEvent(BadRequest):
    """An event field that cannot be framed safely (CR, LF or NUL in id/event)."""


class Unauthorized(CycloneSSEError):
    """Missing or wrong credentials (a publish key or a token)."""

    status = 401


class InvalidToken(Unauthorized):
    """A token that is missing, expired, not yet valid, malformed or forged; answered
    with ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class Forbidden(CycloneSSEError):
    """A valid client without the right to a channel (``channel`` names it)."""

    status = 403

    def __init__(self, message: str, channel: str | None = None) -> None:
        super().__init__(message)
        self.channel = channel


class TooManyRequests(CycloneSSEError):
    """An expensive request over its rate; the client may retry after ``retry_after``."""

    status = 429
    retry_after = 1


class AuthUnavailable(CycloneSSEError):
    """The auth callback could not answer (timeout, error, garbage): fail closed."""

    status = 503


class PayloadTooLarge(CycloneSSEError):
    """A body over ``--max-body``."""

    status = 413


class BrokerUnavailable(CycloneSSEError):
    """The upstream broker is down: publishing would silently lose the event."""

    status = 503


class NotFound(CycloneSSEError):
    """Something asked for that is not there (a WebSocket unsubscribe of a channel the
    connection does not hold)."""

    status = 404


class Conflict(CycloneSSEError):
    """A request that clashes with the state it meets (a channel subscribed twice on
    one WebSocket connection)."""

    status = 409


class UpgradeRequired(BadRequest):
    """A WebSocket handshake of a version this daemon does not speak (RFC 6455: 426,
    naming the version it does)."""

    status = 426
    headers = {"Sec-WebSocket-Version": "13"}


class BadGateway(CycloneSSEError):
    """A GRIP backend that did not answer, or answered with instructions this proxy
    cannot follow."""

    status = 502
