"""Summarise py-spy raw samples (from `reconcile.py --profile DIR`) as text.

Per thread: its share of samples; then, for the busiest thread (or all), the
functions by inclusive share (a frame counted once per sample) and by self
share (the leaf frame). Samples include idle ones (`--idle`), so a thread
waiting for a subprocess shows up in `subprocess`/`selectors` frames: the
share is wall time, not CPU time.

    python benchmarks/profile_summary.py prof/n1000-validate-cold.txt [--top 25]
        [--all-threads | --match "MainThread"]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _frame_key(frame: str) -> str:
    """`func (file)` without the line number: one row per function."""
    m = _FRAME.match(frame)
    return f"{m.group('func')} ({m.group('file')})" if m else frame


def load(path: Path) -> list[tuple[str, list[str], int]]:
    """(process and thread, frames root-first, samples) per distinct stack."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        frames = m.group("stack").split(";")
        owner = []
        while frames and frames[0].startswith(("process ", "thread ")):
            head = frames.pop(0)
            # `process 123:"cmdline"` -> `process 123`; `thread (123): Name` as it is.
            owner.append(head.split(":", 1)[0] if head.startswith("process ") else head)
        rows.append((" ".join(owner) or "?", frames, int(m.group("count"))))
    return rows


def summarise(path: Path, top: int, all_threads: bool, match: str | None = None) -> str:
    rows = load(path)
    total = sum(c for _, _, c in rows) or 1
    threads = Counter[str]()
    for thread, _, count in rows:
        threads[thread] += count
    out = [f"{path.name}: {total} samples"]
    for thread, count in threads.most_common():
        out.append(f"  {thread}: {count} samples")
    if match is not None:
        wanted = {t for t in threads if match in t}
    elif all_threads:
        wanted = set(threads)
    else:
        wanted = {threads.most_common(1)[0][0]} if threads else set()
    inclusive = Counter[str]()
    leaf = Counter[str]()
    scope = 0
    for thread, frames, count in rows:
        if thread not in wanted:
            continue
        scope += count
        for key in {_frame_key(f) for f in frames}:
            inclusive[key] += count
        if frames:
            leaf[_frame_key(frames[-1])] += count
    scope = scope or 1
    out.append(f"inclusive (share of {scope} samples of {len(wanted)} thread(s)):")
    out += [f"  {100 * c / scope:5.1f}%  {k}" for k, c in inclusive.most_common(top)]
    out.append("self:")
    out += [f"  {100 * c / scope:5.1f}%  {k}" for k, c in leaf.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--all-threads", action="store_true")
    parser.add_argument("--match", help="only threads whose label contains this, e.g. MainThread")
    args = parser.parse_args()
    for path in args.files:
        print(summarise(path, args.top, args.all_threads, args.match))
        print()


if __name__ == "__main__":
    main()
