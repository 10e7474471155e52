"""The harness itself: with no attack, the loop lands a change of each target."""

from __future__ import annotations

from pathlib import Path

from tests.hostile.loop import assert_survived, two_targets


def test_the_loop_lands_changes_of_both_targets(tmp_path: Path) -> None:
    with two_targets(tmp_path) as env:
        before = {ns: env.folders(ns) for ns in env.remotes}
        assert all(before.values()), before
        loop = env.start()
        loop.wait_cycles(1)
        assert loop.get("/healthz")[0] == 200
        for ns in ("agents", "staging"):
            assert_survived(env, loop, other=ns, before=before)
