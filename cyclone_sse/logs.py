"""JSON log lines for log collectors (journald, Docker, Loki...), one object per line:

    twistd --logger=cyclone_sse.logs.json_lines -n cyclone-sse

Each line has ``time`` (ISO 8601, UTC), ``level``, ``namespace``, ``message`` (the text
the plain log would show, so tokens are blanked just the same) and, for a failure,
``traceback``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer


@implementer(ILogObserver)
class JsonLines:
    """Writes each log event as one JSON object on its own line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        record: dict[str, object] = {
            "time": datetime.fromtimestamp(event.get("log_time", 0),
                                           UTC).isoformat(timespec="milliseconds"),
            "level": level.name if level is not None else "info",
            "namespace": event.get("log_namespace", ""),
            "message": formatEvent(event),
        }
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()


def json_lines() -> JsonLines:
    """The factory ``twistd --logger`` names: JSON lines on standard output."""
    return JsonLines(sys.stdout)
