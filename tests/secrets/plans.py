"""Secret plans shared by the tests of bridge.secrets."""

from __future__ import annotations

from bridge.models import FrozenDict, SecretPlan
from bridge.redaction import Redacted

# Long, distinctive values so a leak scan can look for them; one multi-line
# value and one with YAML/URI specials, to catch quoting and escaping slips.
VALUES = {
    "API_TOKEN": "tok-9f8e7d6c5b4a39281706",
    "DATABASE_URI": "postgres://app:Pw0rd-q8Z3xV7mN2@db:5432/app?sslmode=disable",
    "PEM_LIKE": "-----BEGIN KEY-----\nMIIBqzQ3bXVsdGlsaW5l\nc2VjcmV0dmFsdWU=\n-----END KEY-----\n",
    "TRICKY": "yes: #not-a-comment 'quoted' \"dq\" {flow} [seq] & * ! % @",
}


def make_plan(
    values: dict[str, str] | None = None,
    *,
    name: str = "alpha-env",
    namespace: str = "agents",
    file: str = "secret-env.yaml",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> SecretPlan:
    values = VALUES if values is None else values
    return SecretPlan(
        file=file,
        name=name,
        namespace=namespace,
        labels=FrozenDict(
            {"app.kubernetes.io/managed-by": "gitops-bridge"} if labels is None else labels
        ),
        annotations=FrozenDict({} if annotations is None else annotations),
        data=tuple(sorted((k, Redacted(v)) for k, v in values.items())),
    )
