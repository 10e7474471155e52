"""The generated Postgres password, kept in git encrypted under the bridge key.

The bridge generates the password once and must give the same one to every
later render, across restarts and replicas, with no database of its own. So it
keeps it in the deployment's state file, sealed with AES-256-GCM under a subkey
of the bridge key. `purpose` (e.g. "postgres:<deployment id>") is bound as
associated data, so a token copied to another deployment's state does not open.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import string

from bridge.redaction import Redacted
from bridge.secrets.digests import derive_key

ESCROW_INFO = b"gitops-bridge escrow v1"
TOKEN_PREFIX = "v1:"  # noqa: S105 - a format tag, not a secret
PASSWORD_LENGTH = 40
# Letters and digits only: the password sits unescaped in a postgres:// URI
# and in env values, where any punctuation would need quoting somewhere.
PASSWORD_ALPHABET = string.ascii_letters + string.digits
_NONCE_BYTES = 12


def generate_password() -> Redacted:
    """40 characters from [A-Za-z0-9] by the OS CSPRNG (~238 bits)."""
    return Redacted("".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH)))


def seal_escrow(key: Redacted, purpose: str, password: Redacted) -> str:
    """ "v1:" + urlsafe base64 of nonce || AES-256-GCM(ciphertext || tag)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # not in every process

    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(derive_key(key, ESCROW_INFO)).encrypt(
        nonce, password.reveal().encode("utf-8"), purpose.encode("utf-8")
    )
    return TOKEN_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def open_escrow(key: Redacted, purpose: str, token: str) -> Redacted:
    """The password in `token`; ValueError (naming no secret) if it cannot be opened."""
    if not token.startswith(TOKEN_PREFIX):
        raise ValueError(f"escrow token for {purpose!r} is not a v1 token")
    try:
        raw = base64.b64decode(token[len(TOKEN_PREFIX) :], altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"escrow token for {purpose!r} is not valid base64") from None
    if len(raw) < _NONCE_BYTES + 16:
        raise ValueError(f"escrow token for {purpose!r} is too short")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        plain = AESGCM(derive_key(key, ESCROW_INFO)).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], purpose.encode("utf-8")
        )
    except InvalidTag:
        raise ValueError(
            f"escrow token for {purpose!r} does not open: the bridge key differs from the "
            "one that sealed it, or the token was altered"
        ) from None
    try:
        return Redacted(plain.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"escrow token for {purpose!r} holds no text") from None
