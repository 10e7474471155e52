"""The in-process SOPS writer against the real `sops` binary.

The bridge writes SOPS's file format itself (bridge/secrets/sops.py). These
tests hold it to the binary both ways: its files decrypt with `sops --decrypt`
(which checks the MAC, so a MAC computed any other way fails), tampering is
caught by that check, and the layout is line for line what `sops --encrypt`
writes for the same Secret, ciphertext aside.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml

from bridge.formats import canonical_yaml
from bridge.models import SecretPlan
from bridge.secrets.sops import (
    ENCRYPTED_REGEX,
    SOPS_FORMAT_VERSION,
    SopsSealer,
    age_armor,
    decrypt_value,
    encrypt_value,
    sops_binary_path,
)
from tests.secrets.plans import VALUES, make_plan
from tests.sopstools import new_identity, sops_decrypt_raw

EDGE_VALUES = {
    "EMPTY": "",
    "NUMBER": "0123",
    "BOOLISH": "true",
    "NULLISH": "~",
    "UNICODE": "pässwörd-✓-秘密",
    "TRAILING": "line with trailing space \nand CRLF\r\n",
    "LEADING": "  leading spaces",
    "TABS": "a\tb",
    "QUOTES": "'single' \"double\" `back`",
    "LONG": "x" * 5000,
}


@pytest.fixture(scope="module")
def identity() -> Any:
    return new_identity()


def real_sops_encrypt(plan: SecretPlan, recipients: list[str]) -> bytes:
    """What `sops --encrypt` writes for the same plaintext and settings."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "config.yaml").write_text("stores:\n  yaml:\n    indent: 2\n")
        return subprocess.run(
            [
                str(sops_binary_path()),
                *("--disable-version-check", "--config", f"{tmp}/config.yaml", "--encrypt"),
                *("--age", ",".join(recipients), "--encrypted-regex", ENCRYPTED_REGEX),
                *("--input-type", "yaml", "--output-type", "yaml", "--indent", "2", "/dev/stdin"),
            ],
            input=canonical_yaml.dump_bytes(plan.manifest()),
            capture_output=True,
            cwd=tmp,
            env={"HOME": tmp},
            check=True,
            timeout=60,
        ).stdout


def layout(data: bytes) -> str:
    """The file with what is random in it (ciphertext, age files, time) blanked."""
    text = data.decode()
    text = re.sub(
        r"(?s)-----BEGIN AGE ENCRYPTED FILE-----.*?-----END AGE ENCRYPTED FILE-----", "AGE", text
    )
    text = re.sub(r"ENC\[AES256_GCM,[^\]]*\]", "ENC", text)
    return re.sub(r'lastmodified: "[^"]*"', "lastmodified", text)


def decrypts(data: bytes, *identities: Any) -> dict[str, Any]:
    proc = sops_decrypt_raw(data, keys="\n".join(str(i) for i in identities), output="json")
    assert proc.returncode == 0, proc.stderr.decode()
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


PLANS = {
    "values": make_plan(),
    "edge": make_plan(EDGE_VALUES),
    # sops encrypts any value with a path component matching the regex: a
    # metadata key named "data" is encrypted by both writers.
    "data-named-annotation": make_plan(annotations={"data": "x", "note": "yes"}),
    "labels": make_plan(labels={"app.kubernetes.io/instance": "alpha", "n": "123"}),
}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_layout_is_what_sops_writes(name: str, identity: Any) -> None:
    plan = PLANS[name]
    recipients = [str(identity.to_public()), str(new_identity().to_public())]
    ours = SopsSealer(recipients).seal(plan)
    theirs = real_sops_encrypt(plan, sorted(recipients))
    assert layout(ours) == layout(theirs)
    assert decrypts(ours, identity) == plan.manifest()


def test_metadata_names_the_format_and_time() -> None:
    identity = new_identity()
    when = datetime(2026, 12, 4, 15, 40, 44, tzinfo=UTC)
    sealed = SopsSealer([str(identity.to_public())], clock=lambda: when).seal(make_plan())
    meta = yaml.safe_load(sealed)["sops"]
    assert meta["lastmodified"] == "2026-12-04T15:40:44Z"
    assert meta["version"] == SOPS_FORMAT_VERSION
    assert meta["encrypted_regex"] == ENCRYPTED_REGEX
    assert decrypts(sealed, identity)["stringData"] == VALUES


def test_random_values_round_trip_through_the_real_sops(identity: Any) -> None:
    rng = random.Random(20261204)  # seeded: a failure is reproducible
    alphabet = "abcXYZ019 \t\n\r:#'\"{}[],&*!|>%@`-_=~?\\/é✓秘\u00a0\u2028"
    for _ in range(12):
        values = {
            f"K{i}_{rng.randrange(1000)}": "".join(
                rng.choice(alphabet) for _ in range(rng.randrange(0, 60))
            )
            for i in range(rng.randrange(1, 6))
        }
        plan = make_plan(values)
        assert decrypts(SopsSealer([str(identity.to_public())]).seal(plan), identity) == (
            plan.manifest()
        )


def swap_values(data: bytes, first: str, second: str) -> bytes:
    doc = data.decode().splitlines(keepends=True)
    a = next(i for i, line in enumerate(doc) if line.startswith(f"  {first}: "))
    b = next(i for i, line in enumerate(doc) if line.startswith(f"  {second}: "))
    va, vb = doc[a].split(": ", 1)[1], doc[b].split(": ", 1)[1]
    doc[a], doc[b] = f"  {first}: {vb}", f"  {second}: {va}"
    return "".join(doc).encode()


def test_sops_refuses_a_file_whose_values_were_moved_or_changed(identity: Any) -> None:
    # Each value is bound to its path (GCM additional data) and all values to
    # the MAC: the real sops must refuse both kinds of tampering.
    sealed = SopsSealer([str(identity.to_public())]).seal(make_plan())
    moved = swap_values(sealed, "API_TOKEN", "TRICKY")
    assert sops_decrypt_raw(moved, keys=str(identity)).returncode != 0
    renamed = sealed.replace(b"name: alpha-env", b"name: alpha-evil")
    assert renamed != sealed
    proc = sops_decrypt_raw(renamed, keys=str(identity))
    assert proc.returncode != 0
    assert b"MAC mismatch" in proc.stderr


def test_each_recipient_alone_decrypts(identity: Any) -> None:
    other = new_identity()
    sealed = SopsSealer([str(identity.to_public()), str(other.to_public())]).seal(make_plan())
    assert decrypts(sealed, identity)["stringData"] == VALUES
    assert decrypts(sealed, other)["stringData"] == VALUES
    stranger = pyrage.x25519.Identity.generate()
    assert sops_decrypt_raw(sealed, keys=str(stranger)).returncode != 0


def test_armour_is_age_armour() -> None:
    identity = pyrage.x25519.Identity.generate()
    secret = bytes(range(32))
    armored = age_armor(pyrage.encrypt(secret, [identity.to_public()]))
    lines = armored.splitlines()
    assert lines[0] == "-----BEGIN AGE ENCRYPTED FILE-----"
    assert lines[-1] == "-----END AGE ENCRYPTED FILE-----"
    assert all(len(line) == 64 for line in lines[1:-2]) and 0 < len(lines[-2]) <= 64
    assert armored.endswith("\n")


def test_value_cipher_round_trips_and_binds_its_path() -> None:
    key = bytes(32)
    envelope = encrypt_value(key, "s3cret ✓", "stringData:A:")
    assert envelope.startswith("ENC[AES256_GCM,data:") and envelope.endswith(",type:str]")
    assert decrypt_value(key, envelope, "stringData:A:") == "s3cret ✓"
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        decrypt_value(key, envelope, "stringData:B:")
    assert encrypt_value(key, "", "stringData:A:") == ""
