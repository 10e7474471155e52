"""Sealing providers behind one interface, keyed digests, and the password escrow.

A provider turns a plaintext `SecretPlan` into the bytes of an encrypted file
(SOPS-encrypted Secret, or SealedSecret). Encryption is randomised, so the
caller re-seals only when the keyed digest of the plaintext changed or the
recipients changed (`sealed_for`). Nothing here logs or returns plaintext.
"""
