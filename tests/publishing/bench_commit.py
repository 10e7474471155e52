"""Benchmark (not a test): TargetRepo plumbing vs GitPython's index on a repo
of 10,000 files in 1,000 folders. Prints JSON; figures are quoted in
bridge/publishing/repo.py.

    .venv/bin/python -m tests.publishing.bench_commit [ROOT]   # ROOT on tmpfs: /dev/shm/x
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import git as gitpython

from bridge.config import GitSettings, Target
from bridge.publishing import TargetRepo
from tests.gitservers import GIT_ENV, bare_remote

RUNS = 5


def tree(round_: int) -> dict[str, bytes]:
    return {
        f"team{t}/app{a:03}/f{f}.yaml": f"team: {t}\napp: {a}\nfile: {f}\nround: {round_}\n".encode()
        for t in range(10)
        for a in range(100)
        for f in range(10)
    }


def median_ms(fn: Callable[[int], object], runs: int = RUNS) -> float:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def main(root: Path) -> dict[str, float]:
    files = tree(0)
    changed = ["team1/app001/f1.yaml", "team4/app050/f2.yaml", "team9/app099/f9.yaml"]
    out: dict[str, float] = {}

    # --- TargetRepo ---------------------------------------------------------------
    remote = bare_remote(root / "remote.git")
    settings = GitSettings(author_name="Bench", author_email="b@example.com", workdir=root / "wd")
    repo = TargetRepo(Target(namespace="bench", repo=remote.as_uri()), settings)
    repo.sync()
    start = time.perf_counter()
    repo.commit("all", write=files)
    out["targetrepo_first_commit_10k_ms"] = round((time.perf_counter() - start) * 1000, 1)
    out["targetrepo_commit_3_changed_ms"] = median_ms(
        lambda i: repo.commit(f"r{i}", write={p: files[p] + f"#{i}\n".encode() for p in changed})
    )
    out["targetrepo_ls_tree_10k_ms"] = median_ms(lambda _i: repo.ls_tree(""))
    blobs = list(repo.ls_tree("").values())[:1000]
    out["targetrepo_read_blob_x1000_ms"] = median_ms(lambda _i: [repo.read_blob(b) for b in blobs])
    repo.close()

    # --- GitPython index (needs a work tree) -------------------------------------------
    work = root / "gp"
    gp = gitpython.Repo.init(work, initial_branch="main")
    gp.git.update_environment(**GIT_ENV)
    with gp.config_writer() as cw:
        cw.set_value("user", "name", "Bench")
        cw.set_value("user", "email", "b@example.com")
    for path, data in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_bytes(data)
    start = time.perf_counter()
    gp.index.add(list(files))
    gp.index.commit("all")
    out["gitpython_first_commit_10k_ms"] = round((time.perf_counter() - start) * 1000, 1)

    def gp_round(i: int) -> None:
        for p in changed:
            (work / p).write_bytes(files[p] + f"#{i}\n".encode())
        gp.index.add(changed)
        gp.index.commit(f"r{i}")

    out["gitpython_commit_3_changed_ms"] = median_ms(gp_round)
    gp.close()
    return out


if __name__ == "__main__":
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-commit-", dir=base))
    try:
        print(json.dumps(main(root), indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
