"""Sealed Secrets provider: seal in process, unseal here the way the controller does."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from bridge.config import SecretsSettings
from bridge.errors import ConfigError
from bridge.secrets.providers import make_sealer
from bridge.secrets.sealed import Scope, SealedSecretsSealer
from bridge.validation.folders import default_schema_dir
from bridge.validation.schemas import validate_document
from tests.leakscan import scan_text
from tests.secrets.plans import VALUES, make_plan

NS_WIDE = "sealedsecrets.bitnami.com/namespace-wide"
CLUSTER_WIDE = "sealedsecrets.bitnami.com/cluster-wide"


def self_signed(key: Any, common_name: str = "sealed-secret") -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class Controller:
    """The controller's key pair; 2048 bits (the real default is 4096) to keep tests fast."""

    def __init__(self, directory: Path, name: str) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert_file = directory / f"{name}.pem"
        self.cert_file.write_bytes(self_signed(self.key))

    def unseal_value(self, encoded: str, label: bytes) -> bytes:
        # kubeseal pkg/crypto/crypto.go HybridDecrypt, reimplemented.
        raw = base64.b64decode(encoded, validate=True)
        rsa_len = int.from_bytes(raw[:2], "big")
        assert rsa_len == self.key.key_size // 8
        session_key = self.key.decrypt(
            raw[2 : 2 + rsa_len],
            padding.OAEP(
                mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=label
            ),
        )
        assert len(session_key) == 32
        return AESGCM(session_key).decrypt(bytes(12), raw[2 + rsa_len :], None)

    def unseal(self, doc: dict[str, Any]) -> dict[str, str]:
        # The controller derives the label from the SealedSecret's own metadata
        # (sealedsecret_expansion.go Unseal -> labelFor(smeta)).
        meta = doc["metadata"]
        annotations = meta.get("annotations", {})
        if annotations.get(CLUSTER_WIDE) == "true":
            label = b""
        elif annotations.get(NS_WIDE) == "true":
            label = meta["namespace"].encode()
        else:
            label = f"{meta['namespace']}/{meta['name']}".encode()
        return {
            k: self.unseal_value(v, label).decode() for k, v in doc["spec"]["encryptedData"].items()
        }


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Controller:
    return Controller(tmp_path_factory.mktemp("sealed"), "controller")


def seal(controller: Controller, scope: Scope, **plan_args: Any) -> tuple[bytes, dict[str, Any]]:
    sealer = SealedSecretsSealer.from_cert_file(controller.cert_file, scope)
    out = sealer.seal(make_plan(**plan_args))
    return out, yaml.safe_load(out)


@pytest.mark.parametrize("scope", ["strict", "namespace-wide", "cluster-wide"])
def test_controller_unseals_every_value(controller: Controller, scope: Scope) -> None:
    out, doc = seal(controller, scope)
    assert controller.unseal(doc) == VALUES
    assert scan_text(out.decode(), VALUES.values()) == []


def test_strict_scope_binds_namespace_and_name(controller: Controller) -> None:
    _, doc = seal(controller, "strict")
    value = doc["spec"]["encryptedData"]["API_TOKEN"]
    assert controller.unseal_value(value, b"agents/alpha-env") == VALUES["API_TOKEN"].encode()
    for wrong in (b"agents/other-env", b"other/alpha-env", b"agents", b""):
        with pytest.raises(ValueError):
            controller.unseal_value(value, wrong)


def test_namespace_wide_scope_binds_namespace_only(controller: Controller) -> None:
    _, doc = seal(controller, "namespace-wide")
    value = doc["spec"]["encryptedData"]["API_TOKEN"]
    assert controller.unseal_value(value, b"agents") == VALUES["API_TOKEN"].encode()
    for wrong in (b"other", b"agents/alpha-env", b""):
        with pytest.raises(ValueError):
            controller.unseal_value(value, wrong)


def test_cluster_wide_scope_uses_the_empty_label(controller: Controller) -> None:
    _, doc = seal(controller, "cluster-wide")
    value = doc["spec"]["encryptedData"]["API_TOKEN"]
    assert controller.unseal_value(value, b"") == VALUES["API_TOKEN"].encode()
    with pytest.raises(ValueError):
        controller.unseal_value(value, b"agents")


def test_another_controller_key_cannot_unseal(
    controller: Controller, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = Controller(tmp_path_factory.mktemp("other"), "other")
    _, doc = seal(controller, "strict")
    with pytest.raises(ValueError):
        other.unseal(doc)


@pytest.mark.parametrize(
    ("scope", "scope_annotations"),
    [
        ("strict", {}),
        ("namespace-wide", {NS_WIDE: "true"}),
        ("cluster-wide", {CLUSTER_WIDE: "true"}),
    ],
)
def test_document_shape(
    controller: Controller, scope: Scope, scope_annotations: dict[str, str]
) -> None:
    labels = {"app.kubernetes.io/managed-by": "gitops-bridge", "langsmith.com/deployment": "alpha"}
    # A stale scope annotation in the plan must not survive into another scope.
    out, doc = seal(
        controller, scope, labels=labels, annotations={"team": "ml", CLUSTER_WIDE: "true"}
    )
    annotations = {"team": "ml", **scope_annotations}
    meta = {
        "name": "alpha-env",
        "namespace": "agents",
        "labels": labels,
        "annotations": annotations,
    }
    assert doc == {
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": meta,
        "spec": {
            "encryptedData": doc["spec"]["encryptedData"],
            "template": {"metadata": meta, "type": "Opaque"},
        },
    }
    assert list(doc["spec"]["encryptedData"]) == sorted(VALUES)
    text = out.decode()
    assert text.index("API_TOKEN:") < text.index("DATABASE_URI:") < text.index("TRICKY:")
    assert text.endswith("\n") and "\n  name: alpha-env\n" in text


def test_minimal_plan_has_no_empty_maps(controller: Controller) -> None:
    _, doc = seal(controller, "strict", labels={}, annotations={})
    assert doc["metadata"] == {"name": "alpha-env", "namespace": "agents"}
    assert doc["spec"]["template"]["metadata"] == {"name": "alpha-env", "namespace": "agents"}


@pytest.mark.parametrize("scope", ["strict", "namespace-wide", "cluster-wide"])
def test_output_validates_against_the_crd_schema(controller: Controller, scope: Scope) -> None:
    schema_dir = default_schema_dir()
    if schema_dir is None or not (schema_dir / "bitnami.com").is_dir():
        pytest.skip("no schema folder with bitnami.com (set K8S_SCHEMA_DIR to ../shared/schemas)")
    _, doc = seal(controller, scope, annotations={"team": "ml"})
    finding = validate_document(doc, schema_dir=schema_dir)
    assert finding.unchecked is None, finding.unchecked
    assert finding.errors == ()


def test_resealing_is_randomised(controller: Controller) -> None:
    sealer = SealedSecretsSealer.from_cert_file(controller.cert_file)
    first, second = sealer.seal(make_plan()), sealer.seal(make_plan())
    # Fresh session keys and OAEP seeds; stability comes from the caller's digest.
    assert first != second
    assert controller.unseal(yaml.safe_load(first)) == controller.unseal(yaml.safe_load(second))


def test_sealed_for_names_key_and_scope(
    controller: Controller, tmp_path_factory: pytest.TempPathFactory
) -> None:
    strict = SealedSecretsSealer.from_cert_file(controller.cert_file, "strict").sealed_for()
    assert strict.startswith("sealed-secrets:strict:")
    assert len(strict.rsplit(":", 1)[1]) == 16
    # Same key in a re-issued certificate: nothing to re-seal.
    reissued = tmp_path_factory.mktemp("reissued") / "cert.pem"
    reissued.write_bytes(self_signed(controller.key, "renewed"))
    assert SealedSecretsSealer.from_cert_file(reissued).sealed_for() == strict
    wide = SealedSecretsSealer.from_cert_file(controller.cert_file, "namespace-wide").sealed_for()
    assert wide.startswith("sealed-secrets:namespace-wide:") and wide != strict
    other = Controller(tmp_path_factory.mktemp("rotated"), "rotated")
    assert SealedSecretsSealer.from_cert_file(other.cert_file).sealed_for() != strict


def test_make_sealer_builds_the_configured_scope(controller: Controller) -> None:
    sealer = make_sealer(
        SecretsSettings(
            provider="sealed-secrets",
            sealed_cert_file=controller.cert_file,
            sealed_scope="cluster-wide",
        )
    )
    assert isinstance(sealer, SealedSecretsSealer)
    assert sealer.sealed_for().startswith("sealed-secrets:cluster-wide:")


def _ec_cert() -> bytes:
    return self_signed(ec.generate_private_key(ec.SECP256R1()))


def _private_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        (b"not a certificate\n", "not a PEM X.509 certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a PEM X.509"),
        (_private_key_pem(), "not a PEM X.509 certificate"),
        (_ec_cert(), "needs an RSA key"),
    ],
    ids=["missing", "garbage", "bad-pem", "private-key", "ec-cert"],
)
def test_bad_cert_file_is_a_config_error(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "cert.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        make_sealer(SecretsSettings(provider="sealed-secrets", sealed_cert_file=path))
    message = str(info.value)
    assert "secrets.sealedSecrets.certFile" in message and str(path) in message
    assert expected in message
    assert info.value.exit_code == 2


def test_unreadable_cert_file_is_a_config_error(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory.pem"
    directory.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        make_sealer(SecretsSettings(provider="sealed-secrets", sealed_cert_file=directory))


def test_unset_cert_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"secrets\.sealedSecrets\.certFile"):
        make_sealer(SecretsSettings(provider="sealed-secrets"))


def test_edge_values_round_trip(controller: Controller) -> None:
    values = {"EMPTY": "", "UNICODE": "pässwörd-✓-秘密", "CRLF": "a\r\nb\n"}
    _, doc = seal(controller, "strict", values=values)
    assert controller.unseal(doc) == values
