"""The manual's site (docs/, Sphinx) builds with warnings as errors, its generated
reference pages carry what the code declares, and every link inside it leads somewhere
(what can be checked offline: pages, anchors and files of the site itself)."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.daemon import ROOT


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q",
                             "-b", "html", "docs", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_the_reference_is_generated_from_the_code(site):
    from cyclone_sse.errors import CycloneSSEError
    from cyclone_sse.metrics import METRICS
    from cyclone_sse.options import OPTIONS_2013, option_fields
    options = (site / "reference" / "options.html").read_text()
    assert all(f"--{name}" in options for name, _ in option_fields())
    metrics = (site / "reference" / "metrics.html").read_text()
    assert all(m.path in metrics for m in METRICS)
    http = (site / "reference" / "http.html").read_text()
    assert "/echo/info" in http and "/publish/" in http and "/stats/channels" in http
    assert all(name in http for name in ("NotFound", "TooManyRequests", "PayloadTooLarge"))
    assert CycloneSSEError.__name__ in http
    old = (site / "howto" / "from-2013.html").read_text()
    assert all(f"--{name}" in old for name, _ in OPTIONS_2013)
    client = (site / "reference" / "python-client.html").read_text()
    assert "Publisher" in client and "make_token" in client


class Links(HTMLParser):
    """The ``href`` and ``src`` of a page, and its ``id`` anchors."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)
            elif name == "id" and value:
                self.ids.add(value)


def test_every_link_inside_the_site_leads_somewhere(site):
    pages = {path: Links() for path in site.rglob("*.html")}
    for path, parser in pages.items():
        parser.feed(path.read_text())
    broken = []
    for path, parser in pages.items():
        for link in parser.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "data:")):
                continue  # (outside the site: not checkable offline)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(site)}: {link}")
            elif parts.fragment and target.suffix == ".html":
                anchors = pages[target].ids if target in pages else set()
                if parts.fragment not in anchors:
                    broken.append(f"{path.relative_to(site)}: {link} (no such anchor)")
    assert not broken, "\n".join(broken)
