"""Sealed Secrets: a plaintext Secret plan in, a `SealedSecret` sealed to the controller out.

This is kubeseal's sealing done in process with `cryptography`, so the bridge
needs neither the kubeseal binary nor access to the cluster: only the
controller's certificate (public key). The byte layout follows kubeseal's own
source, bitnami-labs/sealed-secrets:

- `pkg/crypto/crypto.go` `HybridEncrypt`: a random 32-byte session key;
  `rsa.EncryptOAEP(sha256.New(), rnd, pubKey, sessionKey, label)` (Go uses the
  same hash for OAEP and MGF1); output = uint16 big-endian length of the RSA
  ciphertext || RSA ciphertext || `aed.Seal(..., zeroNonce, plaintext, nil)`
  with AES-256-GCM, a 12-byte zero nonce ("SessionKey is only used once, so
  zero nonce is ok") and no additional data.
- `pkg/apis/sealedsecrets/v1alpha1/sealedsecret_expansion.go`:
  `EncryptionLabel` is "<namespace>/<name>" (strict), "<namespace>"
  (namespace-wide) or "" (cluster-wide); `NewSealedSecret` seals each value
  separately into `spec.encryptedData[key]` as standard base64, copies the
  Secret's metadata into `spec.template.metadata`, and `UpdateScopeAnnotations`
  sets `sealedsecrets.bitnami.com/{namespace,cluster}-wide: "true"`. `Unseal`
  derives the label from the SealedSecret's *own* metadata annotations, so the
  scope annotation must sit on the top-level metadata (kubeseal also puts it on
  the template, since the input Secret carries it).
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bridge.errors import ConfigError
from bridge.formats import canonical_yaml
from bridge.models import SecretPlan

Scope = Literal["strict", "namespace-wide", "cluster-wide"]
SCOPES: tuple[Scope, ...] = ("strict", "namespace-wide", "cluster-wide")
NAMESPACE_WIDE_ANNOTATION = "sealedsecrets.bitnami.com/namespace-wide"
CLUSTER_WIDE_ANNOTATION = "sealedsecrets.bitnami.com/cluster-wide"
API_VERSION = "bitnami.com/v1alpha1"
_SESSION_KEY_BYTES = 32
_ZERO_NONCE = bytes(12)


def encryption_label(namespace: str, name: str, scope: Scope) -> bytes:
    """The OAEP label that binds a sealed value to where it may be unsealed."""
    if scope == "cluster-wide":
        return b""
    if scope == "namespace-wide":
        return namespace.encode("utf-8")
    return f"{namespace}/{name}".encode()


def oaep(label: bytes) -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=label
    )


def hybrid_encrypt(public_key: rsa.RSAPublicKey, plaintext: bytes, label: bytes) -> bytes:
    """kubeseal's HybridEncrypt: len(rsa) || RSA-OAEP(session key) || AES-256-GCM(value)."""
    session_key = os.urandom(_SESSION_KEY_BYTES)
    wrapped = public_key.encrypt(session_key, oaep(label))
    sealed = AESGCM(session_key).encrypt(_ZERO_NONCE, plaintext, None)
    return len(wrapped).to_bytes(2, "big") + wrapped + sealed


def load_certificate(path: Path) -> rsa.RSAPublicKey:
    """The controller's RSA public key from a PEM certificate; ConfigError naming the file."""
    key = "secrets.sealedSecrets.certFile"
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise ConfigError(
            f"{key}: cannot read {path}: {e.strerror or type(e).__name__}",
            hint="fetch it with `kubeseal --fetch-cert > cert.pem` and point certFile at it",
        ) from None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ConfigError(
            f"{key}: {path} is not a PEM X.509 certificate",
            hint="use the controller certificate from `kubeseal --fetch-cert`",
        ) from None
    public_key = cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ConfigError(
            f"{key}: the certificate in {path} has a {type(public_key).__name__}, "
            "Sealed Secrets needs an RSA key",
            hint="use the controller certificate from `kubeseal --fetch-cert`",
        )
    return public_key


class SealedSecretsSealer:
    """Seals Secret plans to one Sealed Secrets controller key, in one scope."""

    def __init__(self, public_key: rsa.RSAPublicKey, scope: Scope = "strict") -> None:
        if scope not in SCOPES:
            raise ConfigError(
                f"secrets.sealedSecrets.scope: {scope!r} is not one of {', '.join(SCOPES)}"
            )
        self.public_key = public_key
        self.scope = scope
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._key_id = hashlib.sha256(der).hexdigest()[:16]

    @classmethod
    def from_cert_file(cls, path: Path, scope: Scope = "strict") -> SealedSecretsSealer:
        return cls(load_certificate(path), scope)

    def sealed_for(self) -> str:
        return f"sealed-secrets:{self.scope}:{self._key_id}"

    def seal(self, plan: SecretPlan) -> bytes:
        return canonical_yaml.dump_bytes(self.document(plan))

    def document(self, plan: SecretPlan) -> dict[str, Any]:
        """The SealedSecret object (values sealed) for `plan`."""
        label = encryption_label(plan.namespace, plan.name, self.scope)
        encrypted = {
            key: base64.b64encode(
                hybrid_encrypt(self.public_key, value.reveal().encode("utf-8"), label)
            ).decode("ascii")
            for key, value in sorted(plan.data, key=lambda kv: kv[0])
        }
        annotations = {
            str(k): str(v)
            for k, v in plan.annotations.items()
            if k not in (NAMESPACE_WIDE_ANNOTATION, CLUSTER_WIDE_ANNOTATION)
        }
        if self.scope == "namespace-wide":
            annotations[NAMESPACE_WIDE_ANNOTATION] = "true"
        elif self.scope == "cluster-wide":
            annotations[CLUSTER_WIDE_ANNOTATION] = "true"
        metadata: dict[str, Any] = {"name": plan.name, "namespace": plan.namespace}
        if annotations:
            metadata["annotations"] = annotations
        if plan.labels:
            metadata["labels"] = {str(k): str(v) for k, v in plan.labels.items()}
        return {
            "apiVersion": API_VERSION,
            "kind": "SealedSecret",
            "metadata": metadata,
            "spec": {
                "encryptedData": encrypted,
                "template": {"metadata": dict(metadata), "type": "Opaque"},
            },
        }
