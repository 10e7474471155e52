"""The cycle's reading of the control plane's listing: deployments grouped by
namespace, the ids of records that did not parse (present, never deleted),
and the deployments the bridge will not manage, named. A listing that cannot
be read at all is a ControlPlaneError: the cycle changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bridge.config import Settings
from bridge.errors import ControlPlaneError, DeploymentError, unexpected
from bridge.models import Deployment, Listener
from bridge.observability.logs import deployment_extra
from bridge.reconcile.notices import OnEvent

log = logging.getLogger("bridge.reconcile")

ListDeployments = Callable[[], tuple[Listener, Sequence[Deployment], Sequence[DeploymentError]]]


@dataclass(frozen=True)
class Listing:
    listener: Listener
    by_namespace: Mapping[str, list[Deployment]]
    invalid: Sequence[DeploymentError]
    # Deployments whose record did not parse count as present: a parse failure
    # must never look like a deletion.
    unparsed_ids: frozenset[str]


def read_listing(list_deployments: ListDeployments, on_event: OnEvent) -> Listing:
    """The listing, or ControlPlaneError: whatever goes wrong while reading it
    (a page the client cannot digest included), this cycle changes nothing."""
    try:
        listener, deployments, invalid = list_deployments()
    except ControlPlaneError:
        raise
    except Exception as e:
        on_event("internal-error", {"where": "cycle"})
        error = unexpected(e, "reading the control plane's listing", where="cycle")
        raise ControlPlaneError(
            error.message,
            hint="the control plane sent something the bridge does not handle; this cycle "
            "changed nothing and the next poll lists again. Please report it with this line",
        ) from e
    for bad in invalid:
        log.error("%s", bad, extra=deployment_extra(bad.deployment_name, bad.deployment_id))
    by_namespace: dict[str, list[Deployment]] = {}
    for dep in deployments:
        by_namespace.setdefault(dep.namespace or "", []).append(dep)
    return Listing(
        listener=listener,
        by_namespace=by_namespace,
        invalid=invalid,
        unparsed_ids=frozenset(e.deployment_id for e in invalid),
    )


def unmanaged_messages(
    listener: Listener, by_namespace: Mapping[str, Sequence[Deployment]], settings: Settings
) -> list[str]:
    """One message per namespace whose deployments the bridge will not manage,
    naming each deployment and id, with advice that can actually help."""
    messages = []
    allowed = ", ".join(repr(n) for n in sorted(listener.namespaces)) or "none"
    for namespace in sorted(by_namespace):
        if settings.target_for(namespace) is not None:
            continue
        deps = sorted(by_namespace[namespace], key=lambda d: (d.name, d.id))
        which = ", ".join(f"{d.name!r} ({d.id})" for d in deps)
        shown = repr(namespace) if namespace else "<none>"
        if namespace not in listener.namespaces:
            messages.append(
                f"deployment(s) {which} in namespace {shown}, which is not one of the "
                f"listener's namespaces ({allowed}): not managed (move them to one of those "
                "namespaces in LangSmith, or add the namespace to the listener)"
            )
        else:
            messages.append(
                f"deployment(s) {which} in namespace {shown} of the listener have no target "
                f"in the config: skipped (add a target for namespace {shown})"
            )
    return messages
