"""Isolation at every boundary (#20): an exception nobody expected fails only the
deployment, target or cycle it happened in; the loop never dies of it.

The exceptions are injected at named points of the real process
(`GITOPS_BRIDGE_RAISE_AT`, bridge/faults.py), so these tests hold whatever
input the next bug comes from. Each ends with the hostile suite's checks: the
loop is alive, the other target's change lands, nothing is deleted, no secret
appears anywhere, memory stays under the pod's limit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.hostile.loop import Loop, TwoTargets, assert_survived, two_targets
from tests.reliability.harness import run_bridge

RAISE = "GITOPS_BRIDGE_RAISE_AT"
TRACEBACK = "Traceback (most recent call last)"


def status(env: TwoTargets) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((env.scenario.workdir / "status.json").read_text())
    return doc


def internal_errors(loop: Loop, where: str) -> float:
    _code, text = loop.get("/metrics")
    found = re.search(rf'gitops_bridge_internal_errors_total{{where="{where}"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def test_a_deployment_that_raises_fails_alone(tmp_path: Path) -> None:
    with two_targets(tmp_path) as env:
        sibling = env.world.create("agents-sibling", "agents")
        before = {ns: env.folders(ns) for ns in env.remotes}
        loop = env.start(env={RAISE: "plan-deployment/agents-app"})
        loop.wait_cycles(3)
        # The target's other deployment is planned and committed beside it.
        assert "agents-sibling" in env.folders("agents")
        assert_survived(env, loop, other="staging", before=before)
        failed = [o for o in status(env)["outcomes"] if o["action"] == "failed"]
        assert [o["deployment_id"] for o in failed] == [env.ids["agents"]], failed
        assert "unexpected InjectedFault at bridge/faults.py" in failed[0]["error"]
        assert env.ids["agents"] in failed[0]["error"] and "'agents-app'" in failed[0]["error"]
        assert internal_errors(loop, "deployment") >= 3
        # Logged at error level with its frames once, not every cycle.
        lines = [ln for ln in loop.log().splitlines() if "unexpected InjectedFault" in ln]
        errors = [ln for ln in lines if " ERROR " in ln]
        assert len(errors) == 1, lines
        assert "[traceback: InjectedFault at bridge/faults.py" in errors[0]
        # The frames say where, down to the line; never what the exception said.
        assert re.search(r"< bridge/\S+\.py:\d+ in \w+", errors[0]), errors[0]
        assert f"deployment_id={env.ids['agents']}" in errors[0]
        assert TRACEBACK not in loop.log()
        assert sibling["id"] not in json.dumps(failed)


def test_a_target_that_raises_fails_alone(tmp_path: Path) -> None:
    with two_targets(tmp_path) as env:
        before = {ns: env.folders(ns) for ns in env.remotes}
        loop = env.start(env={RAISE: "plan-target/agents"})
        loop.wait_cycles(3)
        assert_survived(env, loop, other="staging", before=before)
        targets = {t["namespace"]: t for t in status(env)["targets"]}
        assert "target agents: unexpected InjectedFault" in targets["agents"]["error"]
        assert targets["staging"]["error"] is None
        assert internal_errors(loop, "target") >= 3
        errors = [ln for ln in loop.log().splitlines() if " ERROR " in ln]
        assert len(errors) == 1 and "[traceback: InjectedFault" in errors[0], errors
        assert TRACEBACK not in loop.log()


def test_a_cycle_that_raises_backs_off_and_the_loop_goes_on(tmp_path: Path) -> None:
    with two_targets(tmp_path) as env:
        before = {ns: env.folders(ns) for ns in env.remotes}
        # The status file cannot be written in the first two cycles (a full disk).
        loop = env.start(env={RAISE: "write-status:2"})
        loop.wait(lambda: "failed again" in loop.log(), "the second failure")
        text = loop.log()
        first = next(ln for ln in text.splitlines() if "the cycle: unexpected" in ln)
        assert " ERROR " in first and "next cycle in 2s" in first, first
        assert "the cycle failed again (InjectedFault); next cycle in 4s" in text
        assert internal_errors(loop, "cycle") == 2
        code, body = loop.get("/readyz")
        assert code == 503 and "unexpected InjectedFault" in body
        assert_survived(env, loop, other="staging", before=before)
        assert loop.get("/readyz")[0] == 200
        assert TRACEBACK not in loop.log()


def test_run_once_exits_with_its_code_and_no_bare_traceback(tmp_path: Path) -> None:
    with two_targets(tmp_path) as env:
        for spec in ("plan-deployment/agents-app", "plan-target/agents", "write-status"):
            env.change("staging", f"registry.example.com/acme/agent:{spec.split('/')[0]}")
            done = run_bridge(env.world, env.scenario.config, env={RAISE: spec})
            assert done.returncode == 1, (spec, done.stderr[-3000:])
            assert TRACEBACK not in done.stderr, done.stderr[-3000:]
            assert "unexpected InjectedFault" in done.stderr, done.stderr[-3000:]
            if spec != "write-status":  # the other target is still committed and pushed
                assert env.landed("staging", f"agent:{spec.split('/')[0]}"), spec
