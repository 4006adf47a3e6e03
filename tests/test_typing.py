"""The decorator keeps signatures visible to type checkers: wrong calls are mypy errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BAD = """
from soloist import App
app = App("memory://")

@app.task
def add(a: int, b: int) -> int:
    return a + b

add.delay(1, "x")
add.delay(1)
name: str = add.delay(1, 2).get()
add.si(1, "x")
other: str = (add.s(1) | add.s(2)).delay().get()
"""


def test_wrong_calls_are_mypy_errors(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    bad = tmp_path / "bad.py"
    bad.write_text(BAD)
    cmd = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(bad)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout
    errors = [line for line in out.splitlines() if line.startswith(str(bad)) and ": error:" in line]
    assert [int(line.split(":")[1]) for line in errors] == [9, 10, 11, 12, 13], out
