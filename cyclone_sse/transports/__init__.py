"""Transports: how events reach one client (an SSE stream, a long-poll answer).

Each is an ``ISubscriber`` built on ``cyclone_sse.subscription.Subscriber``, so the
registry and the subscription protocol treat them alike.
"""

from cyclone_sse.transports.poll import PollSubscriber
from cyclone_sse.transports.stream import DEFAULT_MAX_PENDING, StreamSubscriber

__all__ = ["DEFAULT_MAX_PENDING", "PollSubscriber", "StreamSubscriber"]
