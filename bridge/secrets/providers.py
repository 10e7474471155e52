"""The sealing interface and the one place that picks a provider from the config.

A `Sealer` turns a plaintext `SecretPlan` into the bytes of the file written to
git. Sealing is randomised, so the caller keeps old ciphertext while the keyed
digest of the plan and `sealed_for()` are unchanged; `sealed_for()` names what
the file is sealed *for* (recipients, controller key, scope), so a change there
re-seals every Secret once.
"""

from __future__ import annotations

from typing import Protocol

from bridge.config import SecretsSettings
from bridge.errors import ConfigError
from bridge.models import SecretPlan


class Sealer(Protocol):
    def sealed_for(self) -> str:
        """Stable id of the recipients/key/scope; changes iff re-sealing is needed."""
        ...

    def seal(self, plan: SecretPlan) -> bytes:
        """The encrypted file for `plan`; raises SecretsError, never shows a value."""
        ...


def make_sealer(settings: SecretsSettings) -> Sealer | None:
    """The configured provider, checked now (ConfigError) rather than on first use; None for `none`."""
    # Each provider is imported only when configured: Sealed Secrets brings in
    # X.509 parsing (~40 ms), paid by every `run --once` process otherwise.
    if settings.provider == "none":
        return None
    if settings.provider == "sops":
        from bridge.secrets.sops import SopsSealer

        return SopsSealer(settings.age_recipients)
    if settings.provider == "sealed-secrets":
        from bridge.secrets.sealed import SealedSecretsSealer

        if settings.sealed_cert_file is None:
            raise ConfigError(
                "secrets.sealedSecrets.certFile is not set; provider sealed-secrets needs the "
                "controller certificate",
                hint="fetch it with `kubeseal --fetch-cert > cert.pem`",
            )
        return SealedSecretsSealer.from_cert_file(
            settings.sealed_cert_file.expanduser(), settings.sealed_scope
        )
    raise ConfigError(
        f"secrets.provider: {settings.provider!r} is not one of sops, sealed-secrets, none"
    )
