"""The policy gate: checked before anything of a revision is committed.

A violation is a `PolicyViolation` naming the deployment, the revision and the
rule; the reconciler keeps the deployment's last good commit and goes on with
the others. Checks use the values the renderer will actually write (a null
limit counts as 2x its request), and every image the pod would run — the Agent
Server image and each init container and sidecar — must come from an allowed
registry.
"""

from __future__ import annotations

import re

from bridge.config import PolicySettings
from bridge.errors import PolicyViolation
from bridge.models import Deployment

DIGEST = re.compile(r"@sha256:[a-f0-9]{64}$")


def _split(reference: str) -> tuple[str, str]:
    """(registry host[:port], repository path) with docker's defaults applied.

    `busybox` -> (docker.io, library/busybox); `ghcr.io/acme/x:1@sha256:..` ->
    (ghcr.io, acme/x). A first component is a host only if it has a dot, a
    port or is localhost, as docker decides.
    """
    ref = reference.split("@", 1)[0]
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, path = first.lower(), rest
    else:
        host, path = "docker.io", ref
    head, slash, last = path.rpartition("/")
    path = head + slash + last.split(":", 1)[0]  # drop the tag
    if host == "docker.io" and "/" not in path and path:
        path = "library/" + path
    return host, path.strip("/")


def registry_allowed(image: str, allowed: tuple[str, ...]) -> bool:
    """Host-exact, path-prefix match by component: `registry.example.com` allows
    `registry.example.com/x:1`, never `registry.example.com.evil.io/x` nor
    `registry.example.com:5000/x`; `ghcr.io/acme` never allows `ghcr.io/acmecorp/x`."""
    host, path = _split(image)
    for entry in allowed:
        first, sep, rest = entry.strip().rstrip("/").partition("/")
        entry_host, entry_path = first.lower(), rest if sep else ""
        if host != entry_host:
            continue
        if not entry_path or path == entry_path or path.startswith(entry_path + "/"):
            return True
    return False


def check_policy(dep: Deployment, policy: PolicySettings) -> list[PolicyViolation]:
    def violation(rule: str, message: str) -> PolicyViolation:
        return PolicyViolation(
            message,
            deployment_id=dep.id,
            deployment_name=dep.name,
            revision_id=dep.revision_id,
            rule=rule,
        )

    found: list[PolicyViolation] = []
    spec = dep.resource_spec
    images = [("image_uri", dep.image_uri or "")]
    for kind, items in (("init_containers", spec.init_containers), ("sidecars", spec.sidecars)):
        images.extend((f"{kind}[{c.get('name')}].image", str(c.get("image") or "")) for c in items)
    if policy.allowed_registries is not None:
        for where, image in images:
            if not registry_allowed(image, policy.allowed_registries):
                found.append(
                    violation(
                        "allowedRegistries",
                        f"{where} {image!r} is not from an allowed registry "
                        f"({', '.join(policy.allowed_registries)})",
                    )
                )
    if policy.require_digest:
        for where, image in images:
            if not DIGEST.search(image):
                found.append(
                    violation("requireDigest", f"{where} {image!r} is not pinned by @sha256:")
                )
    if policy.max_replicas is not None:
        for attr in ("min_scale", "max_scale", "queue_min_scale", "queue_max_scale"):
            value = getattr(spec, attr)
            if value is not None and value > policy.max_replicas:
                found.append(
                    violation("maxReplicas", f"{attr} {value} exceeds {policy.max_replicas}")
                )
    for prefix in ("", "queue_", "db_", "redis_"):
        cpu = getattr(spec, f"{prefix}cpu")
        cpu_limit = getattr(spec, f"{prefix}cpu_limit")
        mem = getattr(spec, f"{prefix}memory_mb")
        mem_limit = getattr(spec, f"{prefix}memory_limit_mb")
        if cpu_limit is None and cpu is not None:
            cpu_limit = cpu * 2
        if mem_limit is None and mem is not None:
            mem_limit = mem if prefix == "redis_" else mem * 2
        if policy.max_cpu is not None:
            for attr, value in ((f"{prefix}cpu", cpu), (f"{prefix}cpu_limit", cpu_limit)):
                if value is not None and value > policy.max_cpu:
                    found.append(
                        violation("maxCpu", f"{attr} {value:g} cores exceeds {policy.max_cpu:g}")
                    )
        if policy.max_memory_mb is not None:
            for attr, value in (
                (f"{prefix}memory_mb", mem),
                (f"{prefix}memory_limit_mb", mem_limit),
            ):
                if value is not None and value > policy.max_memory_mb:
                    found.append(
                        violation(
                            "maxMemoryMb", f"{attr} {value} MiB exceeds {policy.max_memory_mb}"
                        )
                    )
    return found
