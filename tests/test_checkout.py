"""The tests test the checkout they are in: the `bridge` package imported is the
one beside this `tests` folder, not another checkout's (an editable install of
another worktree, a PYTHONPATH). tests/operations/test_fresh_clone.py relies on
it to test a clone and not the folder it was made from."""

from __future__ import annotations

from pathlib import Path

import pytest

import bridge

pytestmark = pytest.mark.quick


def test_bridge_is_imported_from_this_checkout() -> None:
    checkout = Path(__file__).resolve().parents[1]
    assert Path(bridge.__file__).resolve() == checkout / "bridge" / "__init__.py"
