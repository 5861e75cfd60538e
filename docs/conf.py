"""Sphinx configuration of cyclone-sse's manual (built by ``.ci/run`` with warnings as
errors: ``uv run sphinx-build -W -b html docs docs/_build/html``)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "clients" / "python"))

project = "cyclone-sse"
author = "the cyclone-sse developers"
copyright = "2013-2026, " + author
extensions = ["sphinx.ext.autodoc", "sphinxcontrib.mermaid", "cyclone_docs"]
html_theme = "furo"
html_title = "cyclone-sse"
exclude_patterns = ["_build", "_ext"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# the architecture diagram is drawn by the reader's browser from docs/architecture.mmd
mermaid_version = "11.4.1"
suppress_warnings = ["autodoc.import_object"]
