"""Attack: deployment names and images that try to forge output.

A newline followed by what looks like the bridge's own log line, ANSI and OSC
escapes (clear the screen, colour, set the terminal title), NUL, a carriage
return, C1 controls (NEL, CSI), a Unicode line separator and a bidi override,
written straight into the control plane's store (its API would refuse them).
One deploys; the other has a bad image and fails by name every cycle.

Through real processes: the text log of `run` has no line the bridge did not
start (every line opens with its own timestamp and level) and no control
character; `status`, `deployments`, `diff` and `audit --output markdown` show
the values escaped; `--output json` keeps them exact. `diff` honours NO_COLOR
on a terminal, and an explicit `--color` wins over it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bridge.localplane.store import Store
from tests.hostile.loop import Loop, TwoTargets, assert_survived, two_targets
from tests.reliability.test_hostile_data import raw_deployment

FORGED = "2030-01-01T00:00:00 ERROR   forged: the bridge was compromised"
# Deploys: its name reaches every log line about it, the tables, git.
NAME = f"evil\n{FORGED}\x1b[2J\x1b[31mred\x00nul\r\u2028sep\u202eX\x85nel\x9b31m"
SHOWN = r"evil\n2030-01-01T00:00:00 ERROR   forged: the bridge was compromised\x1b[2J\x1b[31mred\x00nul\r\u2028sep\u202eX\x85nel\x9b31m"
# Fails every cycle: its name and its bad image reach an error line.
BAD_NAME = f"bad\x1b]0;owned\x07\n{FORGED} (image)"
BAD_SHOWN = (
    r"bad\x1b]0;owned\x07\n2030-01-01T00:00:00 ERROR   forged: the bridge was compromised (image)"
)
BAD_IMAGE = f"registry.example.com/acme/agent:1\n{FORGED}\x1b[0m"

_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
_UNSAFE = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def unsafe_characters(text: str, allowed: str = "\n") -> list[str]:
    return sorted(
        {repr(c) for c in text if c not in allowed and unicodedata.category(c) in _UNSAFE}
    )


def assert_no_forged_line(text: str, what: str) -> None:
    assert unsafe_characters(text) == [], f"{what}: control characters:\n{text[-3000:]}"
    forged = [line for line in text.split("\n") if line.startswith("2030-")]
    assert forged == [], f"{what}: lines the bridge did not write: {forged}"


@dataclass
class Attacked:
    env: TwoTargets
    loop: Loop
    ids: dict[str, str]  # "good"/"bad" -> deployment id

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bridge", *args, "--config", str(self.env.scenario.config)],
            env={**self.env.world.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=self.env.scenario.root,
        )


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attacked]:
    with two_targets(tmp_path_factory.mktemp("outputs")) as env:
        before = {ns: env.folders(ns) for ns in env.remotes}
        store = Store(env.world.root / "cp.db")
        ids = {}
        try:
            for label, name, image in (
                ("good", NAME, "registry.example.com/acme/agent:1.0.0"),
                ("bad", BAD_NAME, BAD_IMAGE),
            ):
                doc, revision = raw_deployment(env.world, name, image=image)
                store.insert_deployment(doc, revision)
                ids[label] = doc["id"]
        finally:
            store.close()
        loop = env.start()
        loop.wait(lambda: ids["bad"] in loop.log(), "the bad image's failure in the log")
        loop.wait(lambda: len(env.folders("agents")) == 2, "the hostile name to be committed")
        assert_survived(env, loop, other="staging", before=before, named=[ids["good"], ids["bad"]])
        loop.stop()
        yield Attacked(env, loop, ids)


def test_the_text_log_has_only_lines_the_bridge_wrote(attacked: Attacked) -> None:
    text = attacked.loop.log()
    assert_no_forged_line(text, "run's log")
    lines = [line for line in text.split("\n") if line]
    assert lines and all(_LINE.match(line) for line in lines), [
        line for line in lines if not _LINE.match(line)
    ]
    # Escaped, not dropped: the log still says which deployment it is about.
    assert f"deployment={BAD_SHOWN} deployment_id={attacked.ids['bad']}" in text


def test_the_json_log_keeps_exact_values(attacked: Attacked) -> None:
    """JSON escapes through its encoder, and a reader gets the value back exactly."""
    run = attacked.cli("--log-format", "json", "run", "--once")
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    names = {doc.get("deployment") for doc in lines}
    assert BAD_NAME in names, run.stderr[-3000:]
    assert all(line.startswith("{") for line in run.stderr.splitlines() if line), run.stderr


def test_the_status_table_escapes(attacked: Attacked) -> None:
    out = attacked.cli("status")
    assert out.returncode == 1, out.stderr  # the bad image is a last error
    assert_no_forged_line(out.stdout + out.stderr, "status")
    assert SHOWN in out.stdout and BAD_SHOWN in out.stdout, out.stdout
    rows = [line for line in out.stdout.split("\n") if line.strip()]
    # Header, the two hostile deployments and the two of the harness: one line each.
    assert len(rows) == 5, out.stdout


def test_the_deployments_table_escapes(attacked: Attacked) -> None:
    out = attacked.cli("deployments")
    assert_no_forged_line(out.stdout + out.stderr, "deployments")
    assert SHOWN in out.stdout, out.stdout
    table = out.stdout.split("\n\n")[0].split("\n")
    assert len(table) == 5, out.stdout  # header + 4 deployments, one line each


def test_json_outputs_keep_exact_values(attacked: Attacked) -> None:
    status = json.loads(attacked.cli("status", "--output", "json").stdout)
    assert {NAME, BAD_NAME} <= {r["name"] for r in status["deployments"]}
    listing = json.loads(attacked.cli("deployments", "--output", "json").stdout)
    assert {NAME, BAD_NAME} <= {d["name"] for d in listing["deployments"]}


def test_diff_and_audit_escape(attacked: Attacked) -> None:
    diff = attacked.cli("diff")
    assert attacked.ids["bad"] in diff.stdout, diff.stdout + diff.stderr
    assert_no_forged_line(diff.stdout + diff.stderr, "diff")
    assert BAD_SHOWN in diff.stdout
    audit = attacked.cli("audit", "--output", "markdown")
    assert attacked.ids["good"] in audit.stdout, audit.stdout + audit.stderr
    assert_no_forged_line(audit.stdout + audit.stderr, "audit")


def on_terminal(attacked: Attacked, *args: str, env: dict[str, str]) -> str:
    """Run a command with its stdout and stderr on a pseudo-terminal; all it wrote."""
    main, child = os.openpty()
    full = {**attacked.env.world.env, **env}
    with subprocess.Popen(
        [sys.executable, "-m", "bridge", *args, "--config", str(attacked.env.scenario.config)],
        env=full,
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        cwd=attacked.env.scenario.root,
    ) as proc:
        os.close(child)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError as e:  # EIO: the child closed the terminal
                assert e.errno == errno.EIO
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=300)
    os.close(main)
    return b"".join(chunks).decode(errors="replace")


def test_diff_honours_no_color(attacked: Attacked) -> None:
    clean = {"NO_COLOR": ""}
    styled = on_terminal(attacked, "diff", env=clean)
    assert "\x1b[1m" in styled, styled  # a terminal, no NO_COLOR: bold headers
    assert BAD_SHOWN in styled
    plain = on_terminal(attacked, "diff", env={"NO_COLOR": "1"})
    assert attacked.ids["bad"] in plain, plain
    assert "\x1b" not in plain, plain
    forced = on_terminal(attacked, "diff", "--color", env={"NO_COLOR": "1"})
    assert "\x1b[1m" in forced, forced  # the explicit flag wins
    piped = attacked.cli("diff", "--color")
    assert "\x1b[1m" in piped.stdout, piped.stdout  # --color means colour, piped too
    assert "\x1b[2J" not in piped.stdout  # never the deployment's own escapes
