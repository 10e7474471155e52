"""input_fingerprint keeps its exact bytes: the input digests in every state file
of every repo are keyed hashes of them, so a different spelling would re-render
and re-commit every deployment after an upgrade. The reference below is the
straightforward spelling the digests were first made with."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest

from bridge.models import Deployment, FrozenDict, thaw
from bridge.rendering import RenderContext
from bridge.rendering.rendering import input_fingerprint
from bridge.rendering.templates import templates_digest
from tests.rendering.support import CASES, context, load_case

pytestmark = pytest.mark.quick  # needs nothing beside the checkout: run in a fresh clone

CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "case.json").is_file())


def reference(dep: Deployment, ctx: RenderContext) -> bytes:
    spec: dict[str, Any] = {
        k: thaw(v) if isinstance(v, FrozenDict | tuple) else v
        # every field, as vars() listed them before the model had slots
        for k, v in sorted(
            (f.name, getattr(dep.resource_spec, f.name)) for f in fields(dep.resource_spec)
        )
    }
    doc = {
        "deployment": {
            "id": dep.id,
            "name": dep.name,
            "namespace": dep.namespace,
            "image": dep.image_uri,
            "revision": dep.revision_id,
            "customUrl": dep.custom_url,
            "secretNames": sorted(s.name for s in dep.secrets),
            "secretReferences": sorted(
                (r.name, r.secret_name, r.secret_key) for r in dep.secret_references
            ),
            "resourceSpec": spec,
        },
        "listener": {"id": ctx.listener.id, "namespaces": sorted(ctx.listener.namespaces)},
        "cluster": ctx.cluster,
        "provider": ctx.secrets_provider,
        "settings": repr(ctx.settings),
        "templates": templates_digest(),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()


@pytest.mark.parametrize("case", CASE_NAMES)
def test_fingerprint_bytes_are_unchanged(case: str) -> None:
    dep, ctx, _doc = load_case(case)
    gateway = {"gateway": {"name": "gw", "namespace": "edge", "hostname": "{name}.example.com"}}
    for each in (ctx, context(provider="none"), context(gateway, provider="sealed-secrets")):
        assert input_fingerprint(dep, each) == reference(dep, each)
        assert input_fingerprint(dep, each) == reference(dep, each)  # the cached context part
