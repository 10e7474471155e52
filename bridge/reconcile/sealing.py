"""Sealing one deployment's Secrets for planning: the Postgres password the
bridge generates once and keeps in escrow, and each Secret file encrypted
anew only when its plaintext or recipients changed (a keyed digest says so),
else the ciphertext already in the tree is reused, byte for byte.

Values stay `Redacted` until the provider reveals them to its encryption
step; nothing here logs or returns a plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.config import SecretsSettings
from bridge.errors import SecretsError
from bridge.formats.state import SecretRecord
from bridge.models import Deployment, SecretPlan
from bridge.reconcile.existing import Existing
from bridge.reconcile.plans import TreeView
from bridge.redaction import Redacted
from bridge.secrets.providers import Sealer

ESCROW_POSTGRES = "postgres-password"
SECRET_MAX_BYTES = 1024 * 1024  # Kubernetes' limit on a Secret's data


def postgres_password(
    settings: SecretsSettings, dep: Deployment, old: Existing | None, *, sealing: bool
) -> tuple[Redacted | None, dict[str, str]]:
    """The Postgres password to render (None: none is rendered) and the escrow to
    record. Generated once, kept encrypted under the bridge key in the state file."""
    from bridge.secrets.escrow import generate_password, open_escrow, seal_escrow

    key = settings.bridge_key
    if not sealing or key is None:
        # Provider none renders no password, but the escrow of an earlier one
        # must survive: switching back must not lock the agent out of its DB.
        return None, dict(old.state.escrow) if old is not None else {}
    purpose = f"{ESCROW_POSTGRES}:{dep.id}"
    token = old.state.escrow.get(ESCROW_POSTGRES) if old is not None else None
    if token is None:
        password = generate_password()
        return password, {ESCROW_POSTGRES: seal_escrow(key, purpose, password)}
    try:
        return open_escrow(key, purpose, token), {ESCROW_POSTGRES: token}
    except ValueError as e:
        raise SecretsError(
            f"cannot read back the Postgres password from the repo: {e}",
            deployment_id=dep.id,
            deployment_name=dep.name,
            hint="the bridge key changed; restore the previous key "
            f"({settings.bridge_key_env}) — a new password would lock "
            "the agent server out of its existing database",
        ) from None


def seal_secrets(
    view: TreeView,
    dep: Deployment,
    plans: Sequence[SecretPlan],
    old: Existing | None,
    sealer: Sealer | None,
    key: Redacted | None,
    *,
    sealed_for: str,
    force_reseal: bool,
) -> tuple[dict[str, bytes], dict[str, SecretRecord]]:
    """Each Secret file's bytes and the record the state file keeps of it."""
    from bridge.secrets.digests import secret_digest

    files: dict[str, bytes] = {}
    records: dict[str, SecretRecord] = {}
    for plan in plans:
        if sealer is None or key is None:
            raise SecretsError(
                f"needs Secret {plan.name} but the secrets provider is none",
                deployment_id=dep.id,
                deployment_name=dep.name,
                hint="configure secrets.provider sops or sealed-secrets",
            )
        _check_size(dep, plan)
        digest = secret_digest(key, plan)
        record = old.state.secrets.get(plan.file) if old is not None else None
        old_blob = old.files.get(plan.file) if old is not None else None
        if (
            not force_reseal
            and record is not None
            and old_blob is not None
            and record.digest == digest
            and record.sealed_for == sealed_for
            # Only what the bridge sealed: a hand-edited file is sealed afresh.
            and old is not None
            and old_blob == old.state.files.get(plan.file)
        ):
            files[plan.file] = view.read_blob(old_blob)
        else:
            files[plan.file] = _seal(sealer, dep, plan)
        records[plan.file] = SecretRecord(digest=digest, sealed_for=sealed_for)
    return files, records


def _check_size(dep: Deployment, plan: SecretPlan) -> None:
    size = sum(len(k.encode()) + len(v.reveal().encode()) for k, v in plan.data)
    if size > SECRET_MAX_BYTES:
        # The API server refuses it, and Flux applies a namespace all or
        # nothing: one oversized Secret would block every deployment in it.
        raise SecretsError(
            f"Secret {plan.name} would hold {size} bytes of keys and values; "
            f"Kubernetes stores at most {SECRET_MAX_BYTES} (1 MiB) per Secret",
            deployment_id=dep.id,
            deployment_name=dep.name,
            hint="shrink the values in LangSmith, or keep large ones in a Secret "
            "you manage and use secret_references",
        )


def _seal(sealer: Sealer, dep: Deployment, plan: SecretPlan) -> bytes:
    try:
        return sealer.seal(plan)
    except SecretsError as e:
        # The provider names the Secret's folder; say the deployment's own name.
        raise SecretsError(
            e.message, deployment_id=dep.id, deployment_name=dep.name, hint=e.hint
        ) from None
    except Exception as e:
        raise SecretsError(
            f"sealing {plan.file} failed: {type(e).__name__}",
            deployment_id=dep.id,
            deployment_name=dep.name,
        ) from None
