"""The `run` loop's garbage collection between cycles (`collect_between_cycles`):
what a cycle leaves alive is frozen so the next cycle's collections skip it,
and cyclic garbage frozen that way is still freed one cycle later."""

from __future__ import annotations

import gc
import weakref

from bridge.commands.run import collect_between_cycles


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_survivors_are_frozen_and_freed_a_cycle_later() -> None:
    alive = Node()
    ref = weakref.ref(alive)
    dead = Node()
    dead_ref = weakref.ref(dead)
    del dead
    assert collect_between_cycles() >= 0.0
    assert dead_ref() is None  # garbage of the cycle just ended: collected now
    assert ref() is not None
    assert gc.get_freeze_count() > 0  # the survivors are out of the next cycle's way
    del alive  # becomes garbage while frozen (the next cycle drops it)
    gc.collect()
    assert ref() is not None  # a collection in the cycle does not walk frozen objects
    collect_between_cycles()
    assert ref() is None  # the next time between cycles frees it
