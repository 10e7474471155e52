"""`gitops-bridge audit` on histories the real bridge wrote, signed with a real SSH key,
then tampered with the ways an auditor must catch."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.keys import ssh_keygen, throwaway_gnupg
from tests.reconcile.world import World, git, make_world


def keygen(path: Path, comment: str) -> str:
    """A key pair; returns the public key line (for allowed_signers)."""
    return ssh_keygen(path, comment=comment).with_suffix(".pub").read_text().strip()


@pytest.fixture
def signed_world(tmp_path: Path) -> Iterator[tuple[World, Path, Path]]:
    with make_world(tmp_path, namespaces=("agents",)) as world:
        bridge_pub = keygen(tmp_path / "bridge_key", "bridge")
        mallory_pub = keygen(tmp_path / "mallory_key", "mallory")
        allowed = tmp_path / "allowed_signers"
        # Both keys are trusted by git -- under different names. git verify-commit
        # would call a commit signed by mallory "good"; the audit must not.
        allowed.write_text(
            f'bridge@test.invalid namespaces="git" {bridge_pub}\n'
            f'mallory@example.com namespaces="git" {mallory_pub}\n'
        )
        world.config_overrides["git.signing"] = {
            "format": "ssh",
            "keyFile": str(tmp_path / "bridge_key"),
        }
        yield world, allowed, tmp_path / "mallory_key"


def audit(world: World, allowed: Path, *extra: str) -> tuple[int, Any, str]:
    config = world.write_config()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "audit",
            "--config",
            str(config),
            "--allowed-signers",
            str(allowed),
            "--output",
            "json",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=world.env,
        timeout=120,
        check=False,
    )
    doc = json.loads(done.stdout) if done.stdout.startswith("{") else None
    return done.returncode, doc, done.stderr


def test_clean_history_is_verified(signed_world: tuple[World, Path, Path]) -> None:
    world, allowed, _ = signed_world
    alpha = world.create("alpha")
    world.create("beta")
    assert world.cycle().exit_code() == 0
    world.admin.patch_deployment(
        alpha["id"],
        {"source_revision_config": {"image_uri": "registry.example.com/acme/agent:2.0.0"}},
    )
    assert world.cycle().exit_code() == 0
    code, doc, err = audit(world, allowed)
    assert code == 0, err
    assert doc["schema"] == 1 and doc["findings"] == []
    by_name = {d["name"]: d for d in doc["deployments"]}
    a = by_name["alpha"]
    assert [r["kind"] for r in a["history"]] == ["deploy", "deploy"]
    assert a["history"][-1]["image"] == "registry.example.com/acme/agent:2.0.0"
    assert a["currentRevision"] == a["history"][-1]["revisionId"]
    assert a["currentCommit"] == a["history"][-1]["commit"]
    for r in a["history"]:
        assert r["signature"]["status"] == "good"
        assert r["signature"]["signer"] == "bridge@test.invalid"
        assert r["signature"]["verified"] is True
    # Markdown for a change ticket
    config = world.write_config()
    md = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "audit",
            "--config",
            str(config),
            "--allowed-signers",
            str(allowed),
        ],
        capture_output=True,
        text=True,
        env=world.env,
        check=True,
    ).stdout
    assert "# Deployment audit" in md and "### agents/alpha" in md and "| deploy |" in md


def _push_as_human(world: World, edit: Any, message: str, sign_with: Path | None = None) -> None:
    clone = world.clone()
    edit(clone)
    git("add", "-A", cwd=clone)
    args = ["commit", "-q", "-m", message]
    if sign_with is not None:
        args = [
            "-c",
            "gpg.format=ssh",
            "-c",
            f"user.signingkey={sign_with}",
            "commit",
            "-S",
            "-q",
            "-m",
            message,
        ]
    git(*args, cwd=clone)
    git("push", "-q", "origin", "HEAD:main", cwd=clone)


def test_drift_forgery_and_wrong_signer_are_found(signed_world: tuple[World, Path, Path]) -> None:
    world, allowed, mallory = signed_world
    alpha = world.create("alpha")
    world.create("beta")
    assert world.cycle().exit_code() == 0
    folder = "test-cluster/agents"

    # 1. A human edits an owned folder (drift).
    def scale(clone: Path) -> None:
        f = clone / folder / "alpha" / "agent-server.yaml"
        f.write_text(f.read_text().replace("replicas: 1", "replicas: 7"))

    _push_as_human(world, scale, "scale alpha by hand")

    # 2. A forged bridge commit: alpha's trailers, but it changes beta's folder,
    #    signed by a key git trusts -- under another name.
    trailers = (
        f"Deployment-Id: {alpha['id']}\nDeployment-Name: alpha\nRevision-Id: {alpha['latest_revision_id']}\n"
        f"Listener-Id: {world.listener_id}\nCluster: test-cluster\nNamespace: agents\nBridge-Version: 0.1.0\n"
    )

    def touch_beta(clone: Path) -> None:
        f = clone / folder / "beta" / "redis.yaml"
        f.write_text(f.read_text() + "# tampered\n")

    _push_as_human(
        world,
        touch_beta,
        f"deploy(agents/alpha): registry.example.com/acme/agent:1.0.0 [revision {alpha['latest_revision_id'][:8]}]\n\n{trailers}",
        sign_with=mallory,
    )
    code, doc, err = audit(world, allowed)
    assert code == 1, err
    types = sorted(f["type"] for f in doc["findings"])
    assert types == ["drift", "trailer-mismatch", "unknown-signer"], doc["findings"]
    drift = next(f for f in doc["findings"] if f["type"] == "drift")
    assert drift["author"] == "A Human <human@example.com>"
    assert f"{folder}/alpha/agent-server.yaml" in drift["paths"]
    mismatch = next(f for f in doc["findings"] if f["type"] == "trailer-mismatch")
    assert "test-cluster/agents/beta" in mismatch["detail"]
    signer = next(f for f in doc["findings"] if f["type"] == "unknown-signer")
    assert "mallory@example.com" in signer["detail"]

    # The next cycle restores both folders; the audit keeps reporting history.
    report = world.cycle()
    assert report.exit_code() == 0
    assert sorted(o.action for o in report.outcomes) == ["restored", "restored"]


def test_unsigned_bridge_commits_are_findings_when_signing_is_expected(
    signed_world: tuple[World, Path, Path],
) -> None:
    world, allowed, _ = signed_world
    world.config_overrides.pop("git.signing")
    world.create("alpha")
    assert world.cycle().exit_code() == 0
    code, doc, _ = audit(world, allowed)
    assert code == 1
    assert [f["type"] for f in doc["findings"]] == ["unsigned"]


def test_openpgp_signed_history_is_verified_against_the_configured_key(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    with throwaway_gnupg(home, "GitOps Bridge <bridge@test.invalid>") as fpr:
        (tmp_path / "w").mkdir()
        with make_world(tmp_path / "w", namespaces=("agents",)) as world:
            world.config_overrides["git.signing"] = {
                "format": "openpgp",
                "key": fpr,
                "gnupgHome": str(home),
            }
            world.create("alpha")
            assert world.cycle().exit_code() == 0
            config = world.write_config()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bridge",
                    "audit",
                    "--config",
                    str(config),
                    "--output",
                    "json",
                ],
                capture_output=True,
                text=True,
                env=world.env,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            doc = json.loads(done.stdout)
            sig = doc["deployments"][0]["history"][0]["signature"]
            assert sig["status"] == "good" and sig["verified"] is True
            assert fpr.endswith(sig["key"])
