"""Sizes a reader can hold (#21, docs/ARCHITECTURE.md): no module of bridge/ over
700 lines, no class over 400, no function over 80, as `scripts/sizes` measures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parents[2]


def test_no_module_class_or_function_is_over_its_limit() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/sizes", "--top", "3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "modules (limit 700 lines):" in done.stdout
