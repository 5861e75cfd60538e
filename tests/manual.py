"""The manual as the tests read it: README.rst, CHANGELOG.rst and every page of docs/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def manual_files() -> list[Path]:
    """README.rst, then every page of the docs site, then CHANGELOG.rst."""
    return [ROOT / "README.rst", *sorted((ROOT / "docs").rglob("*.rst")),
            ROOT / "CHANGELOG.rst"]


def manual_text() -> str:
    """Every page of the manual, one after another."""
    return "\n\n".join(path.read_text() for path in manual_files())


def page(name: str) -> str:
    """One page of docs/ (``howto/redis``)."""
    return (ROOT / "docs" / f"{name}.rst").read_text()
