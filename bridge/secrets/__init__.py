"""Sealing providers behind one interface, keyed digests, and the password escrow.

A provider turns a plaintext `SecretPlan` into the bytes of an encrypted file
(SOPS-encrypted Secret, or SealedSecret). Encryption is randomised, so the
caller re-seals only when the keyed digest of the plaintext changed or the
recipients changed (`sealed_for`). Nothing here logs or returns plaintext.
Imports neither httpx nor git, and nothing from rendering.
"""

from bridge.secrets.digests import input_digest, secret_digest
from bridge.secrets.escrow import generate_password, open_escrow, seal_escrow
from bridge.secrets.providers import Sealer, make_sealer

__all__ = [
    "Sealer",
    "generate_password",
    "input_digest",
    "make_sealer",
    "open_escrow",
    "seal_escrow",
    "secret_digest",
]
