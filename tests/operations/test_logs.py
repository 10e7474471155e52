"""Logs: one line per event, JSON on request, every deployment line names the
deployment and its id, and no secret or API key ever appears (SPEC §8)."""

from __future__ import annotations

import io
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.observability import logs
from tests.leakscan import scan_text
from tests.reconcile.world import World, make_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path, namespaces=("agents",)) as w:
        yield w


def run_once(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    config = world.write_config(**{"policy.maxReplicas": 5})
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args, "run", "--once", "--config", str(config)],
        capture_output=True,
        text=True,
        env=world.env,
        timeout=120,
        check=False,
    )


def test_json_logs_name_every_deployment_and_leak_nothing(world: World) -> None:
    good = world.create("good-agent", secrets_={"OPENAI_API_KEY": "sk-live-abcdef0123456789"})
    bad = world.create("greedy-agent", resource_spec={"min_scale": 1, "max_scale": 50})
    done = run_once(world, "--log-format", "json")
    assert done.returncode == 1, done.stderr  # one deployment broke the policy
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines
    events = [json.loads(line) for line in lines]  # every line is one JSON document
    for e in events:
        assert {"time", "level", "logger", "message"} <= set(e)
        if "deployment" in e:
            assert e["deployment_id"] in (good["id"], bad["id"])
    deploys = [e for e in events if e["message"].startswith("deploy ")]
    assert [e["deployment_id"] for e in deploys] == [good["id"]]
    failure = next(e for e in events if e["level"] == "error" and "maxReplicas" in e["message"])
    assert failure["deployment"] == "greedy-agent" and failure["deployment_id"] == bad["id"]
    assert "greedy-agent" in failure["message"] and bad["id"] in failure["message"]
    # One summary per cycle with its duration: what a CronJob's log (and the
    # benchmark) reads without scraping /metrics.
    (cycle,) = [e for e in events if e.get("event") == "cycle"]
    assert isinstance(cycle["seconds"], float) and 0 < cycle["seconds"] < 120
    assert cycle["message"].startswith("cycle: ")
    needles = [*world.secret_values, world.api_key, world.bridge_key]
    assert scan_text(done.stdout + done.stderr, needles) == []


def test_text_logs_are_one_line_per_event(world: World) -> None:
    world.create("alpha")
    done = run_once(world)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and all(line[:4].isdigit() for line in lines)  # each line starts a record
    assert any("deploy agents/alpha" in line and "deployment_id=" in line for line in lines)
    assert any(" cycle: " in line and " seconds=" in line for line in lines)


def test_scrub_filter_masks_registered_secrets_and_exceptions() -> None:
    stream = io.StringIO()
    logs.setup("json", "info", stream=stream)
    try:
        secret = "lsv2_pt_" + secrets.token_hex(16)
        logs.register_secret(secret)
        log = logging.getLogger("bridge.test")
        log.error("calling with %s", secret)
        try:
            raise RuntimeError(f"server echoed {secret}\nsecond line")
        except RuntimeError:
            log.exception("boom")
        out = stream.getvalue()
        assert secret not in out
        assert len(out.strip().splitlines()) == 2
        assert "RuntimeError" in out and "****" in out
    finally:
        logs.setup("text", "info")
