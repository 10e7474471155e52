"""A hostile control plane against the `run` loop (issue 20): every answer is
bounded, every bad value stays with its deployment, the API key goes nowhere else.

Two kinds of attack, each made on the world's own control plane through
`/_faults` while the loop runs:

- **Control-plane wide** (the listener or the listing): a body that trickles
  (past a request's deadline, or past the cycle's budget), never ends, nests
  10^5 deep, is padded past the byte cap; a page bigger than the `limit` asked
  for, full pages past `maxDeployments`; a redirect to another server (which
  must receive nothing, the API key least of all); a listener whose
  `compute_id` is no safe folder name. The fault fires a bounded number of
  times; the cycles it hits change nothing and say why in one error line
  (`run --once`: exit 3, no traceback); then the loop converges.
- **One deployment** (a newline in its id, a revision id that is no UUID, a
  secret value that is a lone surrogate, a free-form object nested deep): the
  record fails alone, by name, id and field (`run --once`: exit 1), stays
  armed, and the other target's change lands beside it. Its folder is never
  deleted, and a secret value is never shown.

Each test ends with `assert_survived`: the loop is alive, the other target's
change landed, the failure is named in the log, nothing was deleted, no secret
or API key anywhere, peak RSS under the pod's 1 GiB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.gitservers import recording_server
from tests.hostile.loop import TwoTargets, assert_survived, two_targets

LISTENER = "/v2/listeners"
LISTING = "/v2/deployments"


# --- the attacks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Wide:
    """A control-plane-wide attack: rules armed for a bounded number of hits."""

    rules: Callable[[TwoTargets, str], list[dict[str, Any]]]  # (env, recording server's url)
    named: tuple[str, ...]  # what the cycle's error line says
    config: dict[str, Any] = field(default_factory=dict)
    # Bounds set as BRIDGE_* variables, not in the file: a bridge without the
    # key then meets the attack itself (and fails on it), not a config error.
    bounds: dict[str, str] = field(default_factory=dict)


def _trickled_listener(env: TwoTargets, url: str) -> list[dict[str, Any]]:
    # One byte a second: never a per-read timeout (2 s), so only a deadline on
    # the whole request ends each of the cycle's three attempts.
    return [{"path": LISTENER, "mode": "trickle", "seconds": 1, "times": 3}]


def _trickled_pages(env: TwoTargets, url: str) -> list[dict[str, Any]]:
    # Every page trickles; each request would give up after 2 s, but the cycle's
    # control-plane budget (3 s) runs out first: the cycle ends, nothing changed.
    return [{"path": LISTING, "mode": "trickle", "seconds": 1, "times": 2}]


def _rule(path: str, mode: str, times: int, **extra: Any) -> Callable[..., list[dict[str, Any]]]:
    return lambda env, url: [{"path": path, "mode": mode, "times": times, **extra}]


def _redirect(env: TwoTargets, url: str) -> list[dict[str, Any]]:
    return [{"path": LISTENER, "mode": "redirect", "times": 1, "location": f"{url}v2/listeners/x"}]


def _compute_id(value: str) -> Callable[..., list[dict[str, Any]]]:
    return lambda env, url: [
        {"path": LISTENER, "mode": "patch", "times": 1, "changes": {"compute_id": value}}
    ]


def _more_records(env: TwoTargets, url: str) -> list[dict[str, Any]]:
    # Honest-looking full pages (exactly the `limit`, padded with another
    # listener's records) that page on past controlPlane.maxDeployments (150):
    # the world's 2 records and 98 more, then 100 more at offset 100.
    return [
        {"path": LISTING, "mode": "extra-records", "times": 1, "count": 98},
        {"path": LISTING, "mode": "extra-records", "times": 1, "after": 1, "count": 100},
    ]


WIDE: dict[str, Wide] = {
    "trickling listener": Wide(
        _trickled_listener,
        ("/v2/listeners/", "deadline", "controlPlane.timeout"),
        {"controlPlane.timeout": 2},
    ),
    "trickling pages past the cycle's budget": Wide(
        _trickled_pages,
        ("/v2/deployments", "controlPlane.cycleTimeout"),
        {"controlPlane.timeout": 2},
        {"BRIDGE_CONTROL_PLANE_CYCLE_TIMEOUT": "3"},
    ),
    # The default byte cap (8 MiB): without one, either grows the process past 1 GiB in ~15 s.
    "endless page": Wide(
        _rule(LISTING, "endless", 1),
        ("/v2/deployments", "more than 8 MiB", "controlPlane.maxResponseMb"),
    ),
    "oversized page (2 GiB announced)": Wide(
        _rule(LISTING, "oversized", 1, size=2 << 30),
        ("/v2/deployments", "more than 8 MiB", "controlPlane.maxResponseMb"),
    ),
    "page nested 10^5 deep": Wide(
        _rule(LISTING, "deep", 3, depth=100_000), ("/v2/deployments", "nested too deeply")
    ),
    "listener nested 10^5 deep": Wide(
        _rule(LISTENER, "deep", 3, depth=100_000), ("/v2/listeners/", "nested too deeply")
    ),
    "page bigger than the limit asked for": Wide(
        _rule(LISTING, "extra-records", 1, count=150),
        ("/v2/deployments", "152 records", "limit=100"),
    ),
    "more records than controlPlane.maxDeployments": Wide(
        _more_records,
        ("more than 150 deployment records", "controlPlane.maxDeployments"),
        bounds={"BRIDGE_CONTROL_PLANE_MAX_DEPLOYMENTS": "150"},
    ),
    "redirect to another server": Wide(
        _redirect, ("HTTP 302", "a redirect to http://127.0.0.1:", "not followed")
    ),
    "compute_id ../../x": Wide(_compute_id("../../x"), ("compute_id", "'../../x'")),
    "compute_id .GIT. (a git directory on some file systems)": Wide(
        _compute_id(".GIT. "), ("compute_id", "'.GIT. '")
    ),
}


def _before(env: TwoTargets) -> dict[str, set[str]]:
    before = {ns: env.folders(ns) for ns in env.remotes}
    assert all(before.values()), before
    return before


@pytest.mark.parametrize("attack", list(WIDE), ids=list(WIDE))
def test_a_control_plane_wide_attack_changes_nothing_then_the_loop_converges(
    tmp_path: Path, attack: str
) -> None:
    spec = WIDE[attack]
    with two_targets(tmp_path) as env, recording_server() as elsewhere:
        before = _before(env)
        rules = spec.rules(env, elsewhere.url)

        # The loop first (a process past the pod's memory is killed at once):
        # the attacked cycles change nothing, then it converges.
        loop = env.start(env=spec.bounds, **spec.config)
        loop.wait_cycles(1)
        env.arm(*rules)
        loop.wait(lambda: "nothing changed this cycle" in loop.log(), "the attacked cycle", 120)
        assert_survived(
            env,
            loop,
            other="staging",
            before=before,
            named=spec.named,
            needles=[env.world.api_key],
        )
        # Bounded: the fault fired, at most as often as armed, and the loop went on.
        for rule, armed in zip(env.fault_rules(), rules, strict=True):
            assert 1 <= rule["hits"] <= armed["times"], rule
        assert "Traceback" not in loop.log()
        loop.stop()
        after = {ns: env.folders(ns) for ns in env.remotes}

        # `run --once`: exit 3, one error naming the failure, no traceback.
        env.arm(*rules)
        done = env.scenario.run(env=spec.bounds)
        assert done.returncode == 3, (done.returncode, done.stderr[-3000:])
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        for what in spec.named:
            assert what in done.stderr, (what, done.stderr[-3000:])
        assert env.world.api_key not in done.stderr + done.stdout
        assert {ns: env.folders(ns) for ns in env.remotes} == after

        # The API key went to the configured control plane only: nothing reached the other.
        assert elsewhere.requests == [], elsewhere.requests
        assert not elsewhere.received(env.world.api_key)


def test_run_once_refuses_a_listing_of_more_records_than_configured(tmp_path: Path) -> None:
    """`controlPlane.maxDeployments` counts every record the listing returns,
    honest pages too: the world's 2 records against a cap of 1."""
    with two_targets(tmp_path) as env:
        done = env.scenario.run(env={"BRIDGE_CONTROL_PLANE_MAX_DEPLOYMENTS": "1"})
        assert done.returncode == 3, done.stderr[-3000:]
        assert "more than 1 deployment record" in done.stderr
        assert "Traceback" not in done.stderr


# --- one bad deployment ---------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A rewrite of the `agents` deployment that stays armed (every request)."""

    rule: Callable[[str], dict[str, Any]]  # the deployment's id -> the rule
    named: tuple[str, ...]
    hidden: tuple[str, ...] = ()  # what must never be shown (a secret value)


def _patched(**changes: Any) -> Callable[[str], dict[str, Any]]:
    return lambda dep_id: {
        "path": LISTING,
        "mode": "patch",
        "times": None,
        "record": dep_id,
        "changes": {k.replace("__", "."): v for k, v in changes.items()},
    }


BAD: dict[str, Bad] = {
    "newline in the id": Bad(
        lambda dep_id: _patched(id=dep_id + "\nInjected: x")(dep_id),
        ("field id", "is not a UUID", "\\nInjected: x"),
    ),
    "revision id that is no UUID": Bad(
        _patched(latest_revision_id="../../r\x1b[31m"),
        ("field latest_revision_id", "is not a UUID", "\\x1b[31m"),
    ),
    "a secret value that is a lone surrogate": Bad(
        _patched(secrets=[{"name": "API_TOKEN", "value": "tok-\ud800-s3cr3t-value"}]),
        ("field secrets[0].value", "not valid Unicode"),
        hidden=("tok-\\ud800-s3cr3t-value", "s3cr3t"),
    ),
    "a secret name that is a lone surrogate": Bad(
        _patched(secrets=[{"name": "API_\udfff", "value": "x"}]),
        ("field secrets[0].name", "not valid Unicode"),
    ),
    "a free-form object nested 500 deep": Bad(
        lambda dep_id: {
            "path": LISTING,
            "mode": "deep",
            "times": None,
            "record": dep_id,
            "at": "source_config.resource_spec.volumes.0",
            "depth": 500,
        },
        ("field source_config.resource_spec.volumes[0]", "nested deeper than"),
    ),
}


@pytest.mark.parametrize("attack", list(BAD), ids=list(BAD))
def test_a_bad_record_fails_alone_and_the_other_target_deploys(tmp_path: Path, attack: str) -> None:
    spec = BAD[attack]
    with two_targets(tmp_path) as env:
        before = _before(env)
        env.arm(spec.rule(env.ids["agents"]))

        # `run --once`: exit 1, the bad record named with its id, the other deployed.
        image = "registry.example.com/acme/agent:beside-a-bad-one"
        env.change("staging", image)
        done = env.scenario.run()
        assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        for what in (*spec.named, "agents-app", env.ids["agents"]):
            assert what in done.stderr, (what, done.stderr[-3000:])
        assert env.landed("staging", image)
        assert {ns: env.folders(ns) for ns in env.remotes} == before

        # The loop, the record still bad: the other target's next change lands.
        loop = env.start()
        loop.wait(lambda: spec.named[0] in loop.log(), "the bad record to be named")
        assert_survived(
            env, loop, other="staging", before=before, named=(*spec.named, "agents-app")
        )
        text = done.stderr + loop.log()
        for what in spec.hidden:
            assert what not in text
        assert "Traceback" not in text
        assert env.folders("agents") == before["agents"]
