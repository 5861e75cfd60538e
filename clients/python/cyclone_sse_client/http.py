"""Publishing over HTTP (``POST /publish``), blocking or with asyncio, standard library
only.  Works with every broker the daemon runs; an answer means the event is stored and
fanned out."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Union
from urllib.parse import urlsplit

from cyclone_sse_client.errors import PublishError, Unavailable, for_status

DEFAULT_URL = "http://127.0.0.1:8888"
Channels = Union[str, "list[str]"]


@dataclass(frozen=True)
class Published:
    """One channel's event as the daemon stored it."""

    channel: str
    id: str
    subscribers: int
    duplicate: bool = False  # an earlier publish with the same ``id`` was kept instead


def as_data(data: Any) -> str:
    """A payload as event data: text as it is, anything else as compact JSON."""
    if isinstance(data, bytes):
        return data.decode("utf-8")
    if isinstance(data, str):
        return data
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _body(channel: Channels, data: Any, event: str | None, id: str | None) -> bytes:
    body: dict[str, Any] = {"data": as_data(data)}
    body["channel" if isinstance(channel, str) else "channels"] = channel
    if event is not None:
        body["event"] = event
    if id is not None:
        body["id"] = id
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _batch_body(events: Any) -> tuple[bytes, bool]:
    """A batch's JSON list, and whether every event carries its own id (retry-safe)."""
    out = []
    for event in events:
        item = {"data": as_data(event["data"])}
        for name in ("channel", "channels", "event", "id"):
            if event.get(name) is not None:
                item[name] = event[name]
        out.append(item)
    if not out:
        raise ValueError("publish_many: no events")
    all_ids = all("id" in item for item in out)
    return json.dumps(out, ensure_ascii=False).encode("utf-8"), all_ids


def _answer(status: int, raw: bytes) -> list[Published]:
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = {}
    if status != 200:
        reason = answer.get("error") if isinstance(answer, dict) else None
        raise for_status(status, reason or raw[:200].decode("utf-8", "replace")
                         or f"HTTP {status}")
    return [Published(e["channel"], e["id"], e["subscribers"], e.get("duplicate", False))
            for e in answer["events"]]


class _Retrying:
    """Settings shared by both publishers, and when a retry is safe."""

    def __init__(self, url: str = DEFAULT_URL, key: str | None = None,
                 token: str | None = None, timeout: float = 5.0, retries: int = 2,
                 backoff: float = 0.25) -> None:
        self.url = url.rstrip("/") + "/publish"
        self.credential = key or token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.credential:
            headers["Authorization"] = f"Bearer {self.credential}"
        return headers

    def retry_after(self, exc: Unavailable, attempt: int, id: str | None) -> float | None:
        """Seconds to wait before trying again, or None to give up.  Safe: a connection
        refused (nothing was sent), or anything with your own ``id`` (the daemon keeps
        the first publish of an id and answers the retry as a duplicate)."""
        refused = isinstance(exc.__cause__, ConnectionRefusedError)
        if attempt >= self.retries or not (refused or id is not None):
            return None
        return self.backoff * (2 ** attempt)


class Publisher(_Retrying):
    """Blocking publisher: ``Publisher(url, key=...).publish("news", {"a": 1})``.

    ``key`` is the daemon's ``--http-secret`` (or give a publisher ``token``).  Raises a
    ``PublishError`` subclass; retries with backoff where it is safe (see
    ``retry_after``)."""

    def publish(self, channel: Channels, data: Any, event: str | None = None,
                id: str | None = None) -> list[Published]:
        return self._send(_body(channel, data, event, id), id)

    def publish_many(self, events: Any) -> list[Published]:
        """One request for many events — ``[{"channel": ..., "data": ..., "event": ...,
        "id": ...}, ...]`` — stored in order; the answer lists every event's id."""
        body, all_ids = _batch_body(events)
        return self._send(body, "batch" if all_ids else None)

    def _send(self, body: bytes, id: str | None) -> list[Published]:
        attempt = 0
        while True:
            try:
                return self._once(body)
            except Unavailable as exc:
                wait = self.retry_after(exc, attempt, id)
                if wait is None:
                    raise
                time.sleep(wait)
                attempt += 1

    def _once(self, body: bytes) -> list[Published]:
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers=self.headers())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _answer(response.status, response.read())
        except urllib.error.HTTPError as exc:
            return _answer(exc.code, exc.read())
        except urllib.error.URLError as exc:
            raise Unavailable(f"cannot reach {self.url}: {exc.reason}") from exc.reason \
                if isinstance(exc.reason, BaseException) else None
        except (TimeoutError, ConnectionError) as exc:
            raise Unavailable(f"no answer from {self.url}: {exc}") from exc


class AsyncPublisher(_Retrying):
    """The same with asyncio: ``await AsyncPublisher(url, key=...).publish(...)``.

    One HTTP/1.1 request per connection, written with asyncio streams."""

    async def publish(self, channel: Channels, data: Any, event: str | None = None,
                      id: str | None = None) -> list[Published]:
        return await self._send(_body(channel, data, event, id), id)

    async def publish_many(self, events: Any) -> list[Published]:
        """``Publisher.publish_many`` with asyncio."""
        body, all_ids = _batch_body(events)
        return await self._send(body, "batch" if all_ids else None)

    async def _send(self, body: bytes, id: str | None) -> list[Published]:
        attempt = 0
        while True:
            try:
                return await asyncio.wait_for(self._once(body), self.timeout)
            except (TimeoutError, OSError) as exc:
                error = Unavailable(f"no answer from {self.url}: {exc!r}")
                error.__cause__ = exc
            except Unavailable as exc:
                error = exc
            wait = self.retry_after(error, attempt, id)
            if wait is None:
                raise error
            await asyncio.sleep(wait)
            attempt += 1

    async def _once(self, body: bytes) -> list[Published]:
        parts = urlsplit(self.url)
        secure = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if secure else 80)
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl.create_default_context() if secure else None)
        try:
            head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}",
                    f"Content-Length: {len(body)}", "Connection: close",
                    *(f"{name}: {value}" for name, value in self.headers().items())]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            status_line = await reader.readline()
            try:
                status = int(status_line.split()[1])
            except (IndexError, ValueError):
                raise PublishError(f"not an HTTP answer: {status_line[:80]!r}") from None
            length = None
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            raw = await (reader.readexactly(length) if length is not None else reader.read())
            return _answer(status, raw)
        finally:
            writer.close()


def send_event(channel: Channels, data: Any, event: str | None = None,
               id: str | None = None, url: str = DEFAULT_URL, key: str | None = None,
               token: str | None = None, timeout: float = 5.0) -> list[Published]:
    """One publish over HTTP (see ``Publisher``)."""
    return Publisher(url, key, token, timeout).publish(channel, data, event, id)
