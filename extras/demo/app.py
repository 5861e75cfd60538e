"""The seed-001 page, live: two widgets on two channels through ``$.sse``, on one
connection.  One command (README "The browser side")::

    npm install --prefix extras/demo jquery@3 && \
        uv run twistd -n cyclone-sse --app=extras.demo.app.App

then open http://127.0.0.1:8888/demo.  The daemon serves the page, jQuery (from the
npm install above, or the file named by ``$CYCLONE_SSE_DEMO_JQUERY``) and the plugins;
every second it publishes a weather reading on ``weather_channel`` and, now and then,
a note on ``general_channel``; the page's form publishes more.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import cyclone.web
from twisted.application.internet import TimerService

from cyclone_sse.app import App as BaseApp
from cyclone_sse.handlers import BaseHandler

HERE = Path(__file__).resolve().parent
NOTES = ["a new phone was announced", "8 cores, what good news", "the keynote is over"]


def jquery_file() -> Path:
    """Where jQuery is: ``$CYCLONE_SSE_DEMO_JQUERY``, or the npm install beside."""
    named = os.environ.get("CYCLONE_SSE_DEMO_JQUERY")
    return Path(named) if named else HERE / "node_modules" / "jquery" / "dist" / "jquery.min.js"


class DemoPage(BaseHandler):
    """``GET /demo``: the page; ``GET /demo/jquery.js``: jQuery."""

    def get(self, what: str = "") -> None:
        if what == "/jquery.js":
            path, kind = jquery_file(), "text/javascript; charset=utf-8"
            if not path.is_file():
                raise cyclone.web.HTTPError(404, "jQuery is not installed: run "
                                                 "npm install --prefix extras/demo jquery@3")
        else:
            path, kind = HERE / "index.html", "text/html; charset=utf-8"
        self.set_header("Content-Type", kind)
        self.finish(path.read_bytes())


class App(BaseApp):
    """The daemon, plus the page and a publisher that keeps it moving."""

    def build_handlers(self) -> list[tuple[Any, ...]]:
        return [*super().build_handlers(), (r"/demo(/jquery\.js)?", DemoPage)]

    def build_service(self) -> Any:
        tree = super().build_service()
        ticker = TimerService(1.0, self.tick)
        ticker.clock = self.clock
        ticker.setServiceParent(tree)
        self.ticks = 0
        return tree

    def tick(self) -> None:
        self.ticks += 1
        reading = {"city": "Moscow", "celsius": round(random.uniform(-12, -2), 1)}
        self.broker.publish("weather_channel", json.dumps(reading))
        if self.ticks % 5 == 1:
            note = {"text": NOTES[(self.ticks // 5) % len(NOTES)]}
            self.broker.publish("general_channel", json.dumps(note))
