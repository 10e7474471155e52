"""SOPS provider against the real sops binary and real age keys (pyrage)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml

from bridge.config import SecretsSettings
from bridge.errors import ConfigError, SecretsError
from bridge.formats import canonical_yaml
from bridge.secrets.providers import make_sealer
from bridge.secrets.sops import SopsSealer, sops_binary_path
from bridge.validation.schemas import validate_document
from tests.leakscan import scan_text
from tests.secrets.plans import VALUES, make_plan
from tests.sopstools import new_identity, sops_decrypt_raw


class AgeKey:
    def __init__(self, directory: Path, name: str) -> None:
        identity = new_identity()
        self.recipient = str(identity.to_public())
        self.file = directory / f"{name}.key"
        self.file.write_text(f"# public key: {self.recipient}\n{identity}\n", encoding="utf-8")
        self.file.chmod(0o600)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[AgeKey, AgeKey]:
    directory = tmp_path_factory.mktemp("age")
    return AgeKey(directory, "flux"), AgeKey(directory, "backup")


def decrypt(data: bytes, key: AgeKey) -> bytes:
    """What Flux's kustomize-controller does: sops --decrypt with the private key."""
    proc = sops_decrypt_raw(data, key.file)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def load(data: bytes) -> Any:
    return yaml.safe_load(data)


def test_round_trip_gives_back_every_value(keys: tuple[AgeKey, AgeKey]) -> None:
    plan = make_plan()
    sealed = SopsSealer([keys[0].recipient]).seal(plan)
    clear = decrypt(sealed, keys[0])
    assert load(clear)["stringData"] == VALUES
    # Same data; not the same bytes: sops re-quotes some scalars its own way.
    assert load(clear) == plan.manifest()


def test_every_recipient_can_decrypt(keys: tuple[AgeKey, AgeKey]) -> None:
    sealed = SopsSealer([keys[1].recipient, keys[0].recipient]).seal(make_plan())
    for key in keys:
        assert load(decrypt(sealed, key))["stringData"] == VALUES
    recipients = {entry["recipient"] for entry in load(sealed)["sops"]["age"]}
    assert recipients == {keys[0].recipient, keys[1].recipient}


def test_output_is_readable_metadata_and_no_plaintext(keys: tuple[AgeKey, AgeKey]) -> None:
    plan = make_plan(annotations={"note": "kept readable"})
    sealed = SopsSealer([keys[0].recipient]).seal(plan)
    assert scan_text(sealed.decode(), VALUES.values()) == []
    doc = load(sealed)
    assert doc["metadata"] == plan.manifest()["metadata"]
    assert doc["sops"]["encrypted_regex"] == "^(data|stringData)$"
    assert all(v.startswith("ENC[AES256_GCM,") for v in doc["stringData"].values())
    assert "\n  name: alpha-env\n" in sealed.decode()  # 2-space indent, like the rest of the repo


def test_output_validates_as_a_v1_secret(keys: tuple[AgeKey, AgeKey]) -> None:
    sealed = SopsSealer([keys[0].recipient]).seal(make_plan())
    finding = validate_document(load(sealed))
    assert finding.errors == () and finding.unchecked is None


def test_resealing_the_same_plan_gives_different_bytes(keys: tuple[AgeKey, AgeKey]) -> None:
    # sops draws a new data key, IVs and MAC (and a new lastmodified) on every
    # run, so its output is never stable. Stability comes from the caller: it
    # keeps the old file while secret_digest() and sealed_for() are unchanged.
    sealer = SopsSealer([keys[0].recipient])
    first, second = sealer.seal(make_plan()), sealer.seal(make_plan())
    assert first != second
    assert load(decrypt(first, keys[0])) == load(decrypt(second, keys[0]))


def test_parent_sops_yaml_and_sops_env_do_not_leak_in(
    keys: tuple[AgeKey, AgeKey],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flux, backup = keys
    # A hostile/unrelated config above every directory sops could run in:
    # another recipient, metadata encrypted instead of data, 8-space indent.
    (tmp_path / ".sops.yaml").write_text(
        "creation_rules:\n"
        f"  - age: {backup.recipient}\n"
        "    encrypted_regex: ^metadata$\n"
        "stores:\n  yaml:\n    indent: 8\n",
        encoding="utf-8",
    )
    nested = tmp_path / "repo" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    monkeypatch.setattr(tempfile, "tempdir", str(nested))
    monkeypatch.setenv("SOPS_AGE_RECIPIENTS", backup.recipient)
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(backup.file))
    monkeypatch.setenv("SOPS_CONFIG", str(tmp_path / ".sops.yaml"))

    # The trap is real: plain sops in that folder follows the parent config.
    trap = subprocess.run(
        [
            str(sops_binary_path()),
            "--disable-version-check",
            "--encrypt",
            "--input-type",
            "yaml",
            "--output-type",
            "yaml",
            "/dev/stdin",
        ],
        input=canonical_yaml.dump_bytes(make_plan().manifest()),
        capture_output=True,
        check=True,
        cwd=nested,
        env={"HOME": str(nested)},
    )
    assert "ENC[" in str(load(trap.stdout)["metadata"])

    sealed = SopsSealer([flux.recipient]).seal(make_plan())
    doc = load(sealed)
    assert [e["recipient"] for e in doc["sops"]["age"]] == [flux.recipient]
    assert doc["metadata"] == make_plan().manifest()["metadata"]
    assert doc["sops"]["encrypted_regex"] == "^(data|stringData)$"
    assert "\n  name: alpha-env\n" in sealed.decode()
    assert load(decrypt(sealed, flux))["stringData"] == VALUES
    assert not any(p.name.startswith("bridge-sops-") for p in nested.iterdir()), "temp dir left"


def test_sealed_for_names_the_recipient_set(keys: tuple[AgeKey, AgeKey]) -> None:
    a, b = keys[0].recipient, keys[1].recipient
    one = SopsSealer([a]).sealed_for()
    assert one.startswith("sops-age:") and len(one) == len("sops-age:") + 16
    assert SopsSealer([a, b]).sealed_for() == SopsSealer([b, a, b]).sealed_for()
    assert SopsSealer([a, b]).sealed_for() != one
    assert SopsSealer([b]).sealed_for() != one


def test_make_sealer_refuses_missing_or_bad_recipients(keys: tuple[AgeKey, AgeKey]) -> None:
    with pytest.raises(ConfigError, match=r"secrets\.sops\.ageRecipients") as info:
        make_sealer(SecretsSettings(provider="sops"))
    assert info.value.exit_code == 2
    bad = "age1" + "q" * 58  # right shape, not a valid bech32 key
    with pytest.raises(ConfigError, match=r"secrets\.sops\.ageRecipients.*not a valid"):
        make_sealer(SecretsSettings(provider="sops", age_recipients=(keys[0].recipient, bad)))
    sealer = make_sealer(SecretsSettings(provider="sops", age_recipients=(keys[0].recipient,)))
    assert isinstance(sealer, SopsSealer)
    assert make_sealer(SecretsSettings(provider="none")) is None


def test_an_age_failure_is_a_secrets_error_without_plaintext(
    keys: tuple[AgeKey, AgeKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    # age does not fail on a valid recipient; a stand-in that fails and quotes
    # every value it could have seen is the worst case for the error message.
    plan = make_plan()

    def failing(_data: bytes, _recipients: object) -> bytes:
        raise pyrage.EncryptError("cannot encrypt: " + " ".join(VALUES.values()))

    monkeypatch.setattr(pyrage, "encrypt", failing)
    with pytest.raises(SecretsError) as info:
        SopsSealer([keys[0].recipient]).seal(plan)
    message = str(info.value)
    assert "age encryption failed" in message
    assert "secret-env.yaml" in message and "alpha-env" in message
    assert "cannot encrypt" not in message  # the library's own text is never passed on
    assert scan_text(message, VALUES.values()) == []


def test_output_that_is_not_encrypted_is_refused(
    keys: tuple[AgeKey, AgeKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defence in depth: a cipher slip that left a value in clear must not
    # produce a file the bridge would commit.
    monkeypatch.setattr("bridge.secrets.sops.encrypt_value", lambda _key, value, _ad: value)
    with pytest.raises(SecretsError, match=r"did not read back") as info:
        SopsSealer([keys[0].recipient]).seal(make_plan())
    assert scan_text(str(info.value), VALUES.values()) == []


def test_binary_is_the_packaged_executable() -> None:
    path = sops_binary_path()
    assert path.is_absolute() and os.access(path, os.X_OK)
    assert "sops_binary" in path.parts


EDGE_VALUES = {
    "EMPTY": "",
    "NUMBER": "0123",
    "BOOLISH": "true",
    "UNICODE": "pässwörd-✓-秘密",
    "TRAILING": "line with trailing space \nand CRLF\r\n",
}


def test_round_trip_keeps_strings_that_yaml_could_misread(keys: tuple[AgeKey, AgeKey]) -> None:
    plan = make_plan(EDGE_VALUES)
    clear = load(decrypt(SopsSealer([keys[0].recipient]).seal(plan), keys[0]))
    assert clear["stringData"] == EDGE_VALUES
