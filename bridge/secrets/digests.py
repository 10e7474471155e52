"""Keyed digests of what the bridge acted on, safe to write into git.

The state file beside each deployment records a digest of the input (and one
per sealed Secret) so an unchanged poll is a no-op and an unchanged Secret keeps
its old ciphertext. A bare SHA-256 of a secret would let anyone with read access
to the repo confirm a guessed value offline, so every digest that covers a
secret is an HMAC under a subkey of the bridge key, which never leaves the
bridge. Subkeys are derived with HKDF so each use of the bridge key (digests,
escrow) has its own key and a leak of one output type says nothing about the
others.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

from bridge.models import SecretPlan
from bridge.redaction import Redacted

INPUT_DIGEST_INFO = b"gitops-bridge input-digest v1"
SECRET_DIGEST_INFO = b"gitops-bridge secret-digest v1"


def derive_key(key: Redacted, info: bytes) -> bytes:
    """A 32-byte subkey of the bridge key for one purpose (`info`)."""
    material = key.reveal().encode("utf-8")
    if not material:
        raise ValueError("the bridge key is empty")
    return _derive(material, info)


@functools.lru_cache(maxsize=8)
def _derive(material: bytes, info: bytes) -> bytes:
    # Cached: every deployment's input digest needs the same subkey, and HKDF
    # per call was ~15 % of an unchanged cycle. The key is in memory anyway.
    return hkdf_sha256(material, info)


def hkdf_sha256(material: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) without salt, 32 bytes: extract, then one block of expand.

    The standard library's HMAC, not `cryptography`'s HKDF: the same bytes
    (tests check both and the RFC's vector), without importing `cryptography`
    (~8 ms) in every `run --once` process."""
    prk = hmac.new(bytes(32), material, hashlib.sha256).digest()  # no salt: 32 zero bytes
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()  # T(1): 32 bytes is enough


def input_digest(key: Redacted | None, data: bytes) -> str:
    """HMAC-SHA256 of `data` under the bridge key; plain SHA-256 only when there is no key.

    The unkeyed form exists for deployments without secrets on a bridge with
    provider `none`; callers must never feed it secret material.
    """
    if key is None:
        return "sha256:" + hashlib.sha256(data).hexdigest()
    mac = hmac.new(derive_key(key, INPUT_DIGEST_INFO), data, hashlib.sha256)
    return "hmac-sha256:" + mac.hexdigest()


def _field(out: bytearray, value: str) -> None:
    # Length-prefixed, so ("ab", "c") and ("a", "bc") never encode alike.
    raw = value.encode("utf-8")
    out += len(raw).to_bytes(8, "big")
    out += raw


def _section(out: bytearray, tag: str, pairs: list[tuple[str, str]]) -> None:
    _field(out, tag)
    out += len(pairs).to_bytes(8, "big")
    for k, v in pairs:
        _field(out, k)
        _field(out, v)


def encode_plan(plan: SecretPlan) -> bytes:
    """Unambiguous byte encoding of everything that ends up in the Secret. Holds plaintext."""
    out = bytearray()
    _field(out, plan.file)
    _field(out, plan.name)
    _field(out, plan.namespace)
    _section(out, "labels", sorted((str(k), str(v)) for k, v in plan.labels.items()))
    _section(out, "annotations", sorted((str(k), str(v)) for k, v in plan.annotations.items()))
    _section(out, "data", sorted((k, v.reveal()) for k, v in plan.data))
    return bytes(out)


def secret_digest(key: Redacted, plan: SecretPlan) -> str:
    """Keyed digest of a Secret plan: equal iff file, metadata and every value are equal."""
    mac = hmac.new(derive_key(key, SECRET_DIGEST_INFO), encode_plan(plan), hashlib.sha256)
    return "hmac-sha256:" + mac.hexdigest()
