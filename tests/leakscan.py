"""Find secret values anywhere in a git repository or a string (test helper).

SPEC §7: no plaintext secret enters git — no file, commit message or log line,
on any branch, at any point in history. A repo is searched object by object
(`git cat-file --batch-all-objects --batch` covers every object in the object
store: reachable from any ref, only from the reflog, or dangling), plus commit
messages, plus the files of the git directory (config, reflogs, packed-refs,
index, ...) and the working tree of a non-bare clone. A value counts as found
raw, base64-encoded (standard and urlsafe, at each of the three byte
alignments, also across line wraps) or URL-encoded.

Usage: `assert scan_repo(remote, [api_key, *secret_values]) == []`.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

MIN_NEEDLE = 8


def _b64_fragments(raw: bytes) -> set[bytes]:
    """The base64 characters that depend only on `raw`, for each alignment of `raw`."""
    fragments: set[bytes] = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).rstrip(b"=")
        start = -(-8 * shift // 6)  # first character with no prefix bits
        end = 8 * (shift + len(raw)) // 6  # last character with no suffix bits
        fragment = encoded[start:end]
        fragments.add(fragment)
        fragments.add(fragment.translate(bytes.maketrans(b"+/", b"-_")))
    return fragments


class _Needle:
    def __init__(self, value: str) -> None:
        if len(value) < MIN_NEEDLE:
            raise ValueError(
                f"needle of {len(value)} characters is too short to scan for (minimum {MIN_NEEDLE})"
            )
        self.preview = value[:4] + "…"
        raw = value.encode("utf-8")
        self.plain = {raw}
        for encoded in (quote(value, safe=""), quote_plus(value, safe="")):
            self.plain.add(encoded.encode("ascii"))
            self.plain.add(encoded.lower().encode("ascii"))  # %2f as well as %2F
        self.b64 = _b64_fragments(raw)

    def found_in(self, data: bytes, unwrapped: bytes) -> bool:
        return any(p in data for p in self.plain) or any(f in unwrapped for f in self.b64)


def _needles(needles: Iterable[str]) -> list[_Needle]:
    return [_Needle(n) for n in dict.fromkeys(needles)]


def _unwrap(data: bytes) -> bytes:
    # Base64 is often wrapped (PEM, MIME, YAML block scalars); search it unwrapped too.
    return data.replace(b"\r", b"").replace(b"\n", b"").replace(b" ", b"")


def _scan(where: str, data: bytes, needles: list[_Needle], out: list[str]) -> None:
    unwrapped = _unwrap(data)
    for needle in needles:
        if needle.found_in(data, unwrapped):
            out.append(f"{where}: {needle.preview}")


def scan_text(text: str, needles: Iterable[str]) -> list[str]:
    """Every needle found in `text` (e.g. captured logs), as "<text>: <preview>…"."""
    found: list[str] = []
    _scan("<text>", text.encode("utf-8"), _needles(needles), found)
    return found


def _git(git_dir: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), *args],
        capture_output=True,
        check=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"},
    ).stdout


def _objects(git_dir: Path) -> Iterator[tuple[str, str, bytes]]:
    """(object id, type, content) of every object in the object store."""
    out = _git(git_dir, "cat-file", "--batch-all-objects", "--batch", "--unordered")
    pos = 0
    while pos < len(out):
        eol = out.index(b"\n", pos)
        oid, kind, size = out[pos:eol].decode("ascii").split(" ")
        start = eol + 1
        end = start + int(size)
        yield oid, kind, out[start:end]
        pos = end + 1  # content is followed by a newline


def _files(root: Path, skip: Path | None = None) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None:
            dirnames[:] = [d for d in dirnames if (here / d) != skip]
        for name in filenames:
            path = here / name
            if path.is_file() and not path.is_symlink():
                yield path


def scan_repo(path: Path, needles: Iterable[str]) -> list[str]:
    """Every needle found anywhere in the repo at `path` (bare or not); [] when clean.

    Reports "<object id or file>: <first 4 chars of the needle>…", never the needle.
    """
    wanted = _needles(needles)
    path = Path(path)
    git_dir = Path(
        subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--absolute-git-dir"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout.strip()
    )
    found: list[str] = []
    for oid, kind, content in _objects(git_dir):
        _scan(f"{kind} {oid}", content, wanted, found)
    # Commit objects already hold their messages; this also covers any
    # re-encoding git applies when showing them (i18n.commitEncoding).
    log = _git(git_dir, "log", "--all", "--reflog", "--format=%H%x00%B%x00")
    parts = log.split(b"\x00")
    for commit, message in zip(parts[0::2], parts[1::2], strict=False):
        _scan(f"message of {commit.strip().decode()}", message, wanted, found)
    # Files of the git directory (config, reflogs, packed-refs, index, hooks,
    # FETCH_HEAD ...); the object store is compressed and was read above.
    objects_dir = git_dir / "objects"
    for file in _files(git_dir, skip=objects_dir):
        _scan(str(file), file.read_bytes(), wanted, found)
    work_tree = path.resolve()
    if work_tree != git_dir and git_dir.is_relative_to(work_tree):
        for file in _files(work_tree, skip=git_dir):
            _scan(str(file), file.read_bytes(), wanted, found)
    return list(dict.fromkeys(found))


def scan_texts(texts: Iterable[tuple[str, str]], needles: Iterable[str]) -> list[str]:
    """Every needle found in named texts (e.g. a forge's pull request titles,
    bodies and comments), as "<name>: <preview>…"."""
    found: list[str] = []
    wanted = _needles(needles)
    for name, text in texts:
        _scan(name, text.encode("utf-8"), wanted, found)
    return found
