"""Every module of soloist has a place in the import-linter layers contract (pyproject):
a module left out of it could import anything, and `lint-imports` would not say."""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import pytest

import soloist

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def test_every_top_level_module_is_in_a_layer() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [
        c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    ]
    placed = {name for layer in contract["layers"] for name in re.split(r"[|:]", layer)}
    placed = {name.strip() for name in placed}
    modules = {m.name for m in pkgutil.walk_packages(soloist.__path__, "soloist.")}

    def covered(name: str) -> bool:
        parts = name.split(".")
        return any(".".join(parts[:i]) in placed for i in range(2, len(parts) + 1))

    # A package whose submodules are placed one by one may itself stay out (its
    # __init__ only gathers them).
    left_out = {m for m in modules if not covered(m)}
    split = {p for p in left_out if any(m.startswith(p + ".") for m in modules - left_out)}
    assert left_out - split - {"soloist.__main__"} == set()
