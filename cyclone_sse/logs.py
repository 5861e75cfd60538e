"""What reaches the log: URIs with their secrets masked, and JSON log lines for log
collectors (journald, Docker, Loki...), one object per line:

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
from urllib.parse import unquote_plus

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

#: Query arguments whose values never reach a log line, named in any spelling a query
#: parser would decode to them (``%74oken``, ``TOKEN``, ``tok%65n``...).
SECRET_ARGUMENTS = frozenset({"token", "key", "access_token", "jwt", "password", "secret"})


def masked(uri: str) -> str:
    """``uri`` as a log line may show it: the value of every secret argument is
    ``***``.  Names are compared after %-decoding, as the daemon reads them."""
    path, mark, query = uri.partition("?")
    if not mark:
        return uri
    parts = query.split("&")
    for n, part in enumerate(parts):
        name, eq, _ = part.partition("=")
        if eq and unquote_plus(name).strip().lower() in SECRET_ARGUMENTS:
            parts[n] = name + "=***"
    return f"{path}?{'&'.join(parts)}"


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
