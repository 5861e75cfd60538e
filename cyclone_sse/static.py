"""The browser-side files of ``media/`` (``cyclone-sse.js`` …): where they are, read once
into memory with their type and ETag.  ``handlers/static.py`` serves them."""

from __future__ import annotations

import hashlib
import mimetypes
import sys
from dataclasses import dataclass
from pathlib import Path

#: Types for what media/ holds, whatever the machine's mime.types says.
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".json": "application/json; charset=utf-8",
          ".svg": "image/svg+xml", ".png": "image/png"}


def media_dir() -> Path | None:
    """media/ beside the package (a checkout or an editable install), or where a wheel
    installed it (``<prefix>/share/cyclone-sse/media``)."""
    for candidate in (Path(__file__).resolve().parents[1] / "media",
                      Path(sys.prefix) / "share" / "cyclone-sse" / "media"):
        if candidate.is_dir():
            return candidate
    return None


@dataclass(frozen=True)
class StaticFile:
    """One file's bytes with the headers that describe them."""

    body: bytes
    content_type: str
    etag: str


#: Names the 2013 pages loaded that are now another file's.
ALIASES = {"jquery.sse.simple.js": "jquery.sse.js"}


def load_static(folder: Path | None) -> dict[str, StaticFile]:
    """Every regular file directly in ``folder``, by name (and by ``ALIASES``)."""
    files: dict[str, StaticFile] = {}
    if folder is None:
        return files
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            body = path.read_bytes()
            content_type = _TYPES.get(path.suffix) or \
                mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[path.name] = StaticFile(body, content_type, etag)
    for alias, name in ALIASES.items():
        if name in files and alias not in files:
            files[alias] = files[name]
    return files
