"""`bridge.validation.scratch.Validator` writes the roots to tmpfs when it has room, else to the
system temp dir, and leaves nothing behind. Real kustomize, real directories."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from bridge.config import ControlPlaneSettings, Settings
from bridge.redaction import Redacted
from bridge.validation.scratch import Validator

SERVICE = (
    b"apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\n"
    b"spec: {ports: [{port: 80}]}\n"
)


def settings() -> Settings:
    control_plane = ControlPlaneSettings(
        url="https://api.example.com",
        api_key_env="BRIDGE_TEST_KEY",
        api_key=Redacted("-".join(["unused", "in", "this", "test"])),
        listener_id="l-1",
    )
    return Settings(control_plane=control_plane, targets=())


def roots() -> dict[str, dict[str, bytes]]:
    return {
        "c/ns/good": {"kustomization.yaml": b"resources: [svc.yaml]\n", "svc.yaml": SERVICE},
        "c/ns/broken": {"kustomization.yaml": b"resources: [missing.yaml]\n"},
    }


def fs(*, bavail: int, favail: int = 10**6, files: int = 10**6, flag: int = 0) -> os.statvfs_result:
    # (bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax)
    return os.statvfs_result((4096, 4096, 10**6, bavail, bavail, files, favail, favail, flag, 255))


def test_room_is_counted_in_pages_with_half_to_spare() -> None:
    big = {f"ns/d{i}": {"a.yaml": b"x" * 5000, "b.yaml": b"y"} for i in range(100)}
    need = 100 * (2 + 1 + 1) + 16  # 5000 bytes take 2 pages, 1 byte 1, a folder 1, 16 spare
    assert Validator.has_room(big, fs(bavail=2 * need))
    assert not Validator.has_room(big, fs(bavail=2 * need - 1))
    assert not Validator.has_room(big, fs(bavail=10**6, flag=os.ST_RDONLY))
    assert not Validator.has_room(big, fs(bavail=10**6, favail=100))
    assert Validator.has_room(big, fs(bavail=10**6, favail=0, files=0))  # no inode limit


def test_roots_go_to_tmpfs_when_it_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(Validator, "TMPFS", shm)
    assert Validator.scratch_parent(roots()) == str(shm)
    result = Validator(settings())(roots())
    assert result["c/ns/good"] == []
    [problem] = result["c/ns/broken"]
    # kustomize names the file it could not read: the scratch dir was under TMPFS.
    assert "kustomize build failed" in problem and f"{shm}/gitops-bridge-validate-" in problem
    assert list(shm.iterdir()) == []  # removed afterwards


def test_without_tmpfs_the_temp_dir_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Validator, "TMPFS", tmp_path / "absent")
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert Validator.scratch_parent(roots()) is None
    result = Validator(settings())(roots())
    assert result["c/ns/good"] == []
    assert f"{temp}/gitops-bridge-validate-" in result["c/ns/broken"][0]
    assert list(temp.iterdir()) == []


def test_a_failed_write_to_tmpfs_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """TMPFS measured fine but the write fails (here: a file where a folder must go):
    tried again in the temp dir, where this write fails too, and nothing is left."""
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(Validator, "TMPFS", shm)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    clash = {**roots(), "c/ns/good/svc.yaml/x": {"kustomization.yaml": b"resources: []\n"}}
    clash["c/ns/good/svc.yaml"] = clash.pop("c/ns/good/svc.yaml/x")
    # "c/ns/good/svc.yaml" is a folder and a file at once: no file system takes both.
    with pytest.raises(OSError):
        Validator(settings())(clash)
    assert f"validation scratch dir on {shm} failed" in caplog.text
    assert list(shm.iterdir()) == [] and list(temp.iterdir()) == []


def test_scratch_dirs_of_dead_processes_are_removed(tmp_path: Path) -> None:
    """A killed bridge leaves its scratch roots behind (on /dev/shm: pod memory);
    the next validation removes those of dead processes, never a live one's."""
    import subprocess
    import sys

    from bridge.validation.scratch import _scratch_prefix, remove_stale_scratch

    made = subprocess.run(
        [
            sys.executable,
            "-c",
            "import tempfile, sys; from bridge.validation.scratch import _scratch_prefix; "
            "print(tempfile.mkdtemp(prefix=_scratch_prefix(), dir=sys.argv[1]))",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dead = Path(made)
    (dead / "agents" / "x").mkdir(parents=True)
    (dead / "agents" / "x" / "kustomization.yaml").write_text("resources: []\n")
    mine = Path(tempfile.mkdtemp(prefix=_scratch_prefix(), dir=tmp_path))
    unknown = tmp_path / "gitops-bridge-validate-_ab12cd"  # an older, unnamed one
    unknown.mkdir()
    other = tmp_path / "something-else"
    other.mkdir()
    remove_stale_scratch(tmp_path)
    assert not dead.exists()
    assert mine.exists() and unknown.exists() and other.exists()
