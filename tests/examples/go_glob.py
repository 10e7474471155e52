"""Go's `path.Match` and Argo CD's git directory generator, in Python, for tests.

Argo CD's ApplicationSet git directory generator lists every directory of the
checked-out repo (repo-server `GetGitDirectories`: a walk that skips any
directory whose name starts with '.', relative paths, no '.') and keeps a path
when it matches at least one `directories[].path` without `exclude` and no
entry with `exclude: true` (applicationset/generators/git.go `filterApps`),
matching with Go's `path.Match`, where `*` and `?` never match '/'. A pattern
that Go rejects (`ErrBadPattern`) is logged and skipped by Argo CD, i.e. it
silently matches nothing; `BadPattern` lets tests catch that.

This is a line-by-line port of Go's src/path/match.go (scanChunk, matchChunk,
getEsc); runes are Python code points.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class BadPatternError(ValueError):
    """Go's path.ErrBadPattern."""


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = False
    while pattern and pattern[0] == "*":
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: str) -> tuple[str, str]:
    if not chunk or chunk[0] in "-]":
        raise BadPatternError(chunk)
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise BadPatternError(chunk)
    r, rest = chunk[0], chunk[1:]
    if not rest:
        raise BadPatternError(chunk)
    return r, rest


def _match_chunk(chunk: str, s: str) -> tuple[str, bool]:
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[0]
        if c == "[":
            r = ""
            if not failed:
                r, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = False
            if chunk and chunk[0] == "^":
                negated = True
                chunk = chunk[1:]
            match = False
            nrange = 0
            while True:
                if chunk and chunk[0] == "]" and nrange > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:])
                if not failed and lo <= r <= hi:
                    match = True
                nrange += 1
            if match == negated:
                failed = True
        elif c == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if c == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise BadPatternError("trailing backslash")
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    if failed:
        return "", False
    return s, True


def go_path_match(pattern: str, name: str) -> bool:
    """Go's `path.Match(pattern, name)`; raises BadPatternError where Go returns ErrBadPattern."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and chunk == "":
            return "/" not in name
        t, ok = _match_chunk(chunk, name)
        if ok and (len(t) == 0 or len(pattern) > 0):
            name = t
            continue
        if star:
            matched = False
            i = 0
            while i < len(name) and name[i] != "/":
                t, ok = _match_chunk(chunk, name[i + 1 :])
                if ok:
                    if len(pattern) == 0 and len(t) > 0:
                        i += 1
                        continue
                    name = t
                    matched = True
                    break
                i += 1
            if matched:
                continue
        while pattern:
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "")
        return False
    return len(name) == 0


def repo_directories(checkout: Path) -> list[str]:
    """What repo-server's GetGitDirectories returns for a checkout."""
    paths = []
    for dirpath, dirnames, _ in os.walk(checkout):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in dirnames:
            paths.append(Path(dirpath, d).relative_to(checkout).as_posix())
    return sorted(paths)


def filter_apps(directories: Iterable[Mapping[str, Any]], all_paths: Iterable[str]) -> list[str]:
    """Argo CD's `filterApps`, except that a bad pattern raises instead of being skipped."""
    items = list(directories)
    out = []
    for app_path in all_paths:
        include = exclude = False
        for item in items:
            if go_path_match(str(item["path"]), app_path):
                if item.get("exclude"):
                    exclude = True
                else:
                    include = True
        if include and not exclude:
            out.append(app_path)
    return out
