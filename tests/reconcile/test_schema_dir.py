"""`render.schemaDir` in real reconcile cycles: the reconciler checks custom
resources against the folder `schemas import` made, and a custom resource
kind it has no schema for is logged once per process, never passed silently."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.validation import scratch
from bridge.validation.crds import schema_files, write_schema_files
from tests.crds import CRDS
from tests.reconcile.world import World, make_world

AUTOSCALED = {"min_scale": 1, "max_scale": 3}


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    # Whatever other tests of this process logged: this test counts its own warnings.
    monkeypatch.setattr(scratch, "_UNCHECKED_SAID", set())
    with make_world(tmp_path, ("agents",)) as w:
        yield w


def unchecked_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "not schema-checked" in r.getMessage()
    ]


def test_an_unchecked_kind_is_logged_once_per_process(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "no-schemas"
    empty.mkdir()
    world.config_overrides["render.schemaDir"] = str(empty)
    world.create("alpha", resource_spec=AUTOSCALED)
    with caplog.at_level(logging.WARNING):
        first = world.cycle()
        assert first.exit_code() == 0, [o.error for o in first.outcomes]
        world.create("beta", resource_spec=AUTOSCALED)
        second = world.cycle()
    assert second.exit_code() == 0, [o.error for o in second.outcomes]
    assert len(world.log()) == 2  # committed: a missing schema holds nothing back
    assert unchecked_warnings(caplog) == [
        f"not schema-checked: no schema for keda.sh/v1alpha1 ScaledObject in {empty} "
        "(2 objects in this cycle); set render.schemaDir to a folder made by "
        "`gitops-bridge schemas import CRD_FILE... --out DIR` (said once per kind)"
    ]


def test_custom_resources_are_checked_against_render_schema_dir(
    world: World, crd_schema_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world.config_overrides["render.schemaDir"] = str(crd_schema_dir)
    world.create("alpha", resource_spec=AUTOSCALED)
    with caplog.at_level(logging.WARNING):
        report = world.cycle()
    assert report.exit_code() == 0, [o.error for o in report.outcomes]
    assert unchecked_warnings(caplog) == []

    # A schema that refuses what the bridge renders (pollingInterval as a string)
    # must stop the deployment: proof that this folder, and no other, is used.
    crd = yaml.safe_load((CRDS / "keda.sh_scaledobjects.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["pollingInterval"] = {"type": "string"}
    source = tmp_path / "strict-keda.yaml"
    source.write_text(yaml.safe_dump(crd))
    refusing = tmp_path / "refusing"
    write_schema_files(schema_files([source]), refusing)
    world.config_overrides["render.schemaDir"] = str(refusing)
    world.create("beta", resource_spec=AUTOSCALED)
    report = world.cycle()
    assert report.exit_code() == 1
    (failed,) = [o for o in report.outcomes if o.error]
    assert "spec/pollingInterval: 30 is not of type 'string'" in str(failed.error)
    assert len(world.log()) == 1  # alpha only
