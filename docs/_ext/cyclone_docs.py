"""The reference pages' tables, generated from the code when the site is built: every
option (``cyclone_sse.options``), every metric (``cyclone_sse.metrics``), every route
and every refusal status (``cyclone_sse.errors``) — never copied by hand."""

from __future__ import annotations

import inspect
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


class _Generated(SphinxDirective):
    """A directive whose content is reStructuredText made by ``text()``."""

    def text(self) -> str:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.container()
        lines = self.text().splitlines()
        self.state.nested_parse(StringList(lines, source="(generated)"), self.content_offset,
                                container)
        return container.children


class Options(_Generated):
    """Every option: its name, default and meaning."""

    def text(self) -> str:
        from cyclone_sse.options import render_table
        return render_table()


class Metrics(_Generated):
    """Every number in /stats and where it is exported."""

    def text(self) -> str:
        from cyclone_sse.metrics import render_table
        return render_table()


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


class Routes(_Generated):
    """Every URL the daemon answers (with every optional endpoint switched on), the
    methods it takes there and what it does."""

    def text(self) -> str:
        from twisted.internet.task import Clock

        from cyclone_sse.app import App
        app = App({"sockjs_prefix": "/echo", "grip_proxy": "/grip=http://127.0.0.1:1"},
                  reactor=Clock())
        rows = []
        for _, specs in app.handlers:
            for spec in specs:
                handler = spec.handler_class
                methods = [m.upper() for m in ("get", "post", "put", "delete", "options")
                           if _defines(handler, m)]
                path = spec.regex.pattern.rstrip("$").replace("\\", "")
                rows.append(f"* ``{path}`` ({', '.join(methods) or 'any'}) — "
                            f"{_first_line(handler)}")
        return "\n".join(rows) + "\n"


def _defines(handler: type, method: str) -> bool:
    """Whether ``handler`` answers ``method`` itself (not cyclone's 405 default)."""
    import cyclone.web
    own = getattr(handler, method, None)
    return own is not None and own is not getattr(cyclone.web.RequestHandler, method, None)


class Statuses(_Generated):
    """Every refusal the daemon answers with, by status (``cyclone_sse.errors``)."""

    def text(self) -> str:
        from cyclone_sse import errors
        found = []
        for name, cls in vars(errors).items():
            if inspect.isclass(cls) and issubclass(cls, errors.CycloneSSEError):
                found.append((cls.status, name, _first_line(cls)))
        found.sort()
        return "\n".join(f"* ``{status}`` ``{name}`` — {what}" for status, name, what
                         in found) + "\n"


class Options2013(_Generated):
    """Each option of the 2013 cyclone-sse: its default then and now, and its meaning."""

    def text(self) -> str:
        from cyclone_sse.options import OPTIONS_2013, option_fields, shown_default
        now = dict(option_fields())
        rows = [("option", "2013 default", "default now", "meaning now")]
        for name, before in OPTIONS_2013:
            today = shown_default(now[name])
            rows.append((f"``--{name}``", f"``{before}``" if before else "(empty)",
                         f"``{today}``" if today else "(empty)",
                         now[name].metadata["help"]))
        widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
        rule = "  ".join("=" * w for w in widths) + "  " + "=" * 20

        def line(r: tuple[Any, ...]) -> str:
            cells = (str(c).ljust(w) for c, w in zip(r[:3], widths, strict=True))
            return "  ".join(cells) + "  " + r[3]

        return "\n".join([rule, line(rows[0]), rule, *(line(r) for r in rows[1:]), rule])


class CloseCodes(_Generated):
    """The close codes of ``cyclone_sse.closes``: ``websocket`` or ``sockjs``."""

    required_arguments = 1

    def text(self) -> str:
        from cyclone_sse import closes
        return closes.render_table(getattr(closes, self.arguments[0].upper()))


def setup(app: Sphinx) -> dict[str, Any]:
    for name, directive in (("cyclone-sse-options", Options), ("cyclone-sse-metrics", Metrics),
                            ("cyclone-sse-2013-options", Options2013),
                            ("cyclone-sse-close-codes", CloseCodes),
                            ("cyclone-sse-routes", Routes),
                            ("cyclone-sse-statuses", Statuses)):
        app.add_directive(name, directive)
    return {"parallel_read_safe": True}

