"""``GET /static/NAME``: the files of ``media/`` (``cyclone_sse.static``).

The files were read when the application was built: a request never touches the disk
and cannot name anything outside the folder (only the names found there exist).  Each
answer has its type, an ETag (``304`` on ``If-None-Match``) and a cache lifetime.
"""

from __future__ import annotations

import cyclone.web

from cyclone_sse.handlers.base import BaseHandler
from cyclone_sse.static import StaticFile

#: Seconds browsers and proxies may keep a file before asking again (with its ETag).
STATIC_MAX_AGE = 3600


class StaticHandler(BaseHandler):
    """Serves ``App.static_files``."""

    def _describe(self, name: str) -> StaticFile:
        found = self.application.static_files.get(name)
        if found is None:
            raise cyclone.web.HTTPError(404, f"no such file: /static/{name[:100]}")
        self.set_header("Content-Type", found.content_type)
        self.set_header("ETag", found.etag)
        self.set_header("Cache-Control", f"public, max-age={STATIC_MAX_AGE}")
        self.set_header("X-Content-Type-Options", "nosniff")
        return found

    def get(self, name: str) -> None:
        found = self._describe(name)
        if found.etag in self.request.headers.get("If-None-Match", ""):
            self.set_status(304)
            self.finish()
        else:
            self.finish(found.body)

    def head(self, name: str) -> None:
        found = self._describe(name)
        self.set_header("Content-Length", str(len(found.body)))
        self.finish()
