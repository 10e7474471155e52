"""The fast emitter of bridge.formats.canonical_yaml writes exactly what PyYAML writes.

`_dumps_pyyaml` is the reference (the spelling every committed file has);
`dumps` must equal it byte for byte on any data, whether its fast emitter
writes the document or declines it. Checked on generated data that leans on
the hard cases (YAML 1.1 look-alikes, indicators, escapes, line breaks,
non-BMP characters, long strings, empty and nested collections, keys of every
kind) and on every golden file of tests/rendering/cases.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.formats import canonical_yaml
from bridge.formats.canonical_yaml import _Decline, _dumps_fast, _dumps_pyyaml, dumps, dumps_all

pytestmark = pytest.mark.quick  # needs nothing beside the checkout: run in a fresh clone

CASES = Path(__file__).resolve().parents[1] / "rendering" / "cases"

WORDS = [
    "",
    " ",
    "a",
    "agent-server",
    "0",
    "8000",
    "1.10",
    "1e3",
    "0123",
    "0x1F",
    "0o17",
    "0b101",
    "1_000",
    "1.",
    ".5",
    "-.inf",
    ".NaN",
    "12:30",
    "190:20:30",
    "2026-01-01",
    "2026-01-01T00:00:00Z",
    "yes",
    "No",
    "ON",
    "off",
    "y",
    "N",
    "true",
    "False",
    "null",
    "Null",
    "~",
    "<<",
    "=",
    "---",
    "...",
    "--- x",
    "...x",
    "-",
    "- x",
    "-c",
    "?",
    "? x",
    ":",
    "x:",
    "a: b",
    "a:b",
    "x #y",
    "x#y",
    "#x",
    "&a",
    "*a",
    "!tag",
    "|",
    ">",
    "'q'",
    '"q"',
    "%x",
    "@x",
    "`x",
    ",x",
    "x,y",
    "{x}",
    "[x]",
    "x]",
    "key=value",
    "a b",
    "a  b",
    "trailing ",
    " leading",
    "tab\there",
    "\ttab",
    "line one\nline two\n",
    "a\nb",
    "a\n\n",
    "\na",
    "\n",
    "a\n b\n",
    "a \nb",
    "a\r\nb",
    "crlf\r",
    "nel\x85x",
    "ls\u2028x",
    "ps\u2029x",
    "bom\ufeffx",
    "nbsp\xa0x",
    "é",
    "añø 中文",
    "rocket 🚀",
    "\x00",
    "\x07bell",
    "esc\x1b",
    "back\\slash",
    'quote"inside',
    "it's",
    "\ufffe",
    "\ud7ff\ue000",
    "SELECT COUNT(*) FROM t",
    "postgres://u:p@h:5432/db?sslmode=disable",
    "registry.example.com:5000/a/b@sha256:" + "a" * 64,
    "x" * 127,
    "k" * 129,
    "y" * 2500,
    "z " * 2100,
    "é" * 70,
]
ALPHABET = [
    *"abcXYZ019 -_.:/#,?&*!|>'\"%@`{}[]~=\\\t\n\r",
    "é",
    "中",
    "🚀",
    "\x00",
    "\x85",
    "\u2028",
    "\ufeff",
    "\xa0",
]


def random_string(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(WORDS)
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12)))


def random_scalar(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.55:
        return random_string(rng)
    if roll < 0.7:
        return rng.choice([0, 1, -1, 7, 10**20, -(10**30)])
    if roll < 0.82:
        return rng.choice([0.5, -1.25, 1e-7, 3.0, 1e17, 2.5e300, -0.0, 1 / 3])
    if roll < 0.92:
        return rng.choice([True, False])
    return None


def random_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth >= 5 or roll < 0.45:
        return random_scalar(rng)
    size = rng.choice([0, 1, 1, 2, 3, 5])
    if roll < 0.75:
        return {random_string(rng): random_value(rng, depth + 1) for _ in range(size)}
    items = [random_value(rng, depth + 1) for _ in range(size)]
    return tuple(items) if rng.random() < 0.2 else items


def random_document(rng: random.Random) -> Any:
    if rng.random() < 0.85:
        return {random_string(rng): random_value(rng, 1) for _ in range(rng.randint(0, 6))}
    return [random_value(rng, 1) for _ in range(rng.randint(0, 4))]


@pytest.mark.parametrize("seed", range(8))
def test_generated_documents_match_pyyaml(seed: int) -> None:
    rng = random.Random(seed)
    fast = 0
    for _ in range(400):
        doc = random_document(rng)
        want = _dumps_pyyaml(doc)
        assert dumps(doc) == want, doc
        try:
            _dumps_fast(doc)
            fast += 1
        except _Decline:
            pass
    # The comparison means something only if the fast emitter wrote a fair share.
    assert fast > 40


def test_every_word_in_every_position() -> None:
    words = [*WORDS, *ALPHABET]
    for word in words:
        for doc in (
            {"k": word},
            {word: "v"},
            {word: {word: [word]}},
            [word],
            [[word, {"k": word}]],
            {"k": [{"a": word, "b": [word]}]},
            {"outer": {"inner": {"deep": word}}},
        ):
            assert dumps(doc) == _dumps_pyyaml(doc), doc


def test_common_strings_take_the_fast_path() -> None:
    doc = {
        "metadata": {"name": "agent-00001", "labels": {"app.kubernetes.io/name": "x"}},
        "spec": {"replicas": 1, "cpu": "1", "query": "SELECT COUNT(*) FROM run", "on": "yes"},
        "env": [{"name": "PORT", "value": "8000"}, {"name": "EMPTY", "value": ""}],
        "note": "line one\nline two\n",
        "empty": {},
        "none": [],
        "ratio": 0.75,
    }
    assert _dumps_fast(doc) == _dumps_pyyaml(doc)


def golden_files() -> list[Path]:
    return sorted(CASES.glob("*/expected/*.yaml"))


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_golden_files_round_trip(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    docs = list(yaml.safe_load_all(text))
    assert dumps_all(docs) == text
    for doc in docs:
        assert dumps(doc) == _dumps_pyyaml(doc)
        if path.parts[-3] != "hostile-strings":
            # Ordinary renders never need PyYAML.
            assert _dumps_fast(doc) == _dumps_pyyaml(doc)


def test_mappings_and_tuples_of_any_kind() -> None:
    from types import MappingProxyType

    doc = {"b": MappingProxyType({"y": (1, 2), "x": 1.0}), "a": (), 3: "int key"}
    assert dumps(doc) == _dumps_pyyaml(doc)
    assert canonical_yaml.dump_bytes({"x": MappingProxyType({})}) == b"x: {}\n"


def test_long_values_are_written_without_filling_the_cache() -> None:
    """Sealed ciphertexts and config blobs are unique to one deployment: cached,
    they were most of the cache's memory for almost none of its hits. They are
    written the same way, and only short values are kept."""
    cache = canonical_yaml._cached_scalar_text
    cache.cache_clear()
    long_values = [f"ENC[AES256_GCM,data:{i:064x},type:str]" for i in range(50)]
    doc = {"short": "agent-server", "long": long_values}
    assert dumps(doc) == _dumps_pyyaml(doc)
    assert cache.cache_info().currsize == 3  # "short", "long", "agent-server"
    assert dumps(doc) == _dumps_pyyaml(doc)
    assert cache.cache_info().hits >= 1
