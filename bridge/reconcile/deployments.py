"""Planning one deployment: unchanged, edited by hand (restore what the bridge
committed), re-encrypted for new recipients (rekey), or rendered, sealed and
recorded anew (deploy). Reads blobs through the `TreeView` it is given;
never writes. The policy gate is checked here, before anything is rendered.

An unchanged deployment costs one comparison: its input digest (a keyed
digest of everything that shapes its folder) equals the one its state file
records. Equal deployments in the same context reuse last cycle's digest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bridge import RENDER_SCHEMA, __version__
from bridge.config import Settings
from bridge.errors import SecretsError
from bridge.formats.objects import blob_id, quote_path
from bridge.formats.state import STATE_FILE, DeploymentState
from bridge.models import Deployment
from bridge.observability.logs import deployment_extra
from bridge.reconcile.existing import Existing
from bridge.reconcile.plans import TreeView
from bridge.reconcile.reading import last_change
from bridge.reconcile.sealing import postgres_password, seal_secrets
from bridge.redaction import Redacted
from bridge.rendering import RenderContext
from bridge.secrets.providers import Sealer

log = logging.getLogger("bridge.reconcile")

# (commit kind: deploy | restore | rekey, the folder's files, its new state)
Planned = tuple[str, dict[str, bytes], DeploymentState]


@dataclass(frozen=True)
class _Remembered:
    """What planning a deployment computed last cycle, reused while it is equal."""

    deployment: Deployment
    context: RenderContext
    name: str
    digest: str


class DeploymentPlanner:
    """Plans deployments one at a time; remembers digests across cycles and
    plans within one (a rejected push re-plans the target on the new head)."""

    def __init__(self, settings: Settings, *, force_reseal: bool = False) -> None:
        self.settings = settings
        self.force_reseal = force_reseal
        # dep id -> what the last cycle computed; rebuilt each cycle, so it holds
        # the deployments listed last.
        self._remembered: dict[str, _Remembered] = {}
        self._remembered_next: dict[str, _Remembered] = {}
        # Plans by their whole input, so that a push retry does not render again:
        # this target's and the two before it (the cycle begins a target, then
        # starts the one before it, then finishes the publish of the one before
        # that, whose retry comes last).
        self._plans: dict[object, Planned] = {}
        self._plans_before: dict[object, Planned] = {}
        self._plans_older: dict[object, Planned] = {}
        self._sealer: Sealer | None = None
        self._sealer_loaded = False

    def begin_cycle(self) -> None:
        self._remembered_next = {}

    def end_cycle(self) -> None:
        self._plans, self._plans_before, self._plans_older = {}, {}, {}
        self._remembered, self._remembered_next = self._remembered_next, {}

    def forget_plans(self) -> None:
        """Free the rendered files of the last target (they are ~16 MB a target of
        1,000 deployments), not the ones before it."""
        self._plans = {}

    def next_target(self) -> None:
        """Free the rendered files of all but the last two targets (at 10,000
        deployments all of them were ~160 MB; a target published on the cycle's
        thread has freed its own already: `forget_plans`)."""
        self._plans_older, self._plans_before, self._plans = self._plans_before, self._plans, {}

    @property
    def sealer(self) -> Sealer | None:
        if not self._sealer_loaded:
            from bridge.secrets.providers import make_sealer

            self._sealer = make_sealer(self.settings.secrets)
            self._sealer_loaded = True
        return self._sealer

    def sealed_for(self) -> str:
        sealer = self.sealer
        return sealer.sealed_for() if sealer is not None else "none"

    def plan(
        self,
        view: TreeView,
        dep: Deployment,
        name: str,
        context: RenderContext,
        old: Existing | None,
        folder_path: str,
    ) -> Planned | None:
        """None when nothing changed; else what to write for the deployment."""
        sealed_for = self.sealed_for()
        digest = self.digest(dep, context, name)
        if old is not None and old.folder == name and old.state.input_digest == digest:
            drift = old.drifted()
            sealings = old.state.sealings
            # Some secret sealed for other than now (one sealing: not this one).
            resealed = (
                self.force_reseal
                or len(sealings) > 1
                or (len(sealings) == 1 and sealed_for not in sealings)
            )
            if not drift and not resealed:
                return None
            if drift and not resealed:
                return self._restore(view, dep, old, folder_path)
        # Render (the only path that costs anything), once per cycle: a rejected
        # push re-plans on the new head, and if our folder there is as it was,
        # the plan is too. Re-rendering would widen the fetch-to-push window that
        # a busy committer keeps winning.
        plan_key = (
            dep.id,
            name,
            digest,
            sealed_for,
            (old.folder, old.state.to_bytes(), tuple(sorted(old.files.items()))) if old else None,
        )
        cached = (
            self._plans.get(plan_key)
            or self._plans_before.get(plan_key)
            or self._plans_older.get(plan_key)
        )
        if cached is None:
            cached = self._render(view, dep, name, context, old, digest, sealed_for)
            if old is not None and old.folder == name:
                old.check_deletable(view, dep, folder_path, keep=cached[1])
            self._plans[plan_key] = cached
        return cached

    def digest(self, dep: Deployment, context: RenderContext, name: str) -> str:
        """The deployment's input digest, after the policy gate.

        A deployment equal to last cycle's, in the same context and folder, has
        passed the policy and has the same digest: comparing (~6 us) is cheaper
        than checking, encoding and HMAC-ing (~60 us), which was most of an
        unchanged cycle. Not with free-form objects (volumes, sidecars...): there
        `1 == 1.0 == True` in Python, though each renders differently."""
        spec = dep.resource_spec
        free_form = spec.volumes or spec.volume_mounts or spec.init_containers or spec.sidecars
        remembered = None if free_form else self._remembered.get(dep.id)
        if (
            remembered is not None
            and remembered.context is context
            and remembered.name == name
            and (remembered.deployment is dep or remembered.deployment == dep)
        ):
            if remembered.deployment is not dep:
                remembered = _Remembered(dep, context, name, remembered.digest)
            self._remembered_next[dep.id] = remembered  # as it was: no new object
            return remembered.digest
        digest = self._compute_digest(dep, context, name)
        if not free_form:
            self._remembered_next[dep.id] = _Remembered(dep, context, name, digest)
        return digest

    def _compute_digest(self, dep: Deployment, context: RenderContext, name: str) -> str:
        from bridge.reconcile.policy import check_policy
        from bridge.rendering.rendering import input_fingerprint
        from bridge.secrets.digests import input_digest

        violations = check_policy(dep, self.settings.policy)
        if violations:
            raise violations[0]
        key = self.settings.secrets.bridge_key
        if dep.secrets and key is None:
            raise SecretsError(
                "has secrets but no bridge key is configured",
                deployment_id=dep.id,
                deployment_name=dep.name,
                hint=f"set {self.settings.secrets.bridge_key_env}",
            )
        secret_part = b"".join(
            f"{s.name}\0".encode() + _value_digest(key, s.value).encode() + b"\0"
            for s in sorted(dep.secrets, key=lambda s: s.name)
        )
        return input_digest(
            key,
            b"render-schema:%d\0name:%s\0" % (RENDER_SCHEMA, name.encode())
            + input_fingerprint(dep, context)
            + b"\0secrets\0"
            + secret_part,
        )

    def _restore(self, view: TreeView, dep: Deployment, old: Existing, folder_path: str) -> Planned:
        old.check_deletable(view, dep, folder_path, keep=old.state.files)
        restored = old.restored(view, dep, folder_path)
        log.warning(
            "manual edit in %s: %s (last commit by %s); restoring what the bridge committed",
            quote_path(folder_path),
            old.edited(),
            last_change(view, folder_path),
            extra=deployment_extra(dep.name, dep.id, event="drift"),
        )
        return "restore", restored, old.state

    def _render(
        self,
        view: TreeView,
        dep: Deployment,
        name: str,
        context: RenderContext,
        old: Existing | None,
        digest: str,
        sealed_for: str,
    ) -> Planned:
        from bridge.rendering.rendering import render_deployment

        sealer = self.sealer
        key = self.settings.secrets.bridge_key
        password, escrow = postgres_password(
            self.settings.secrets, dep, old, sealing=sealer is not None
        )
        rendered = render_deployment(dep, context, name=name, postgres_password=password)
        files: dict[str, bytes] = dict(rendered.files)
        sealed, records = seal_secrets(
            view,
            dep,
            rendered.secrets,
            old,
            sealer,
            key,
            sealed_for=sealed_for,
            force_reseal=self.force_reseal,
        )
        files.update(sealed)
        kind = "deploy"
        if (
            old is not None
            and old.folder == name
            and old.state.input_digest == digest
            and not old.drifted()
        ):
            kind = "rekey"
        state = DeploymentState(
            deployment_id=dep.id,
            deployment_name=name,
            namespace=dep.namespace or "",
            cluster=context.cluster,
            listener_id=context.listener.id,
            revision_id=dep.revision_id,
            image=dep.image_uri,
            input_digest=digest,
            bridge_version=__version__,
            files={fname: blob_id(data) for fname, data in files.items()},
            secrets=records,
            escrow=escrow,
        )
        files[STATE_FILE] = state.to_bytes()
        return kind, files, state


def _value_digest(key: Redacted | None, value: Redacted) -> str:
    from bridge.secrets.digests import input_digest

    return input_digest(key, b"secret-value\0" + value.reveal().encode())
