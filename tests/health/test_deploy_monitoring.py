"""deploy/: the Grafana dashboard and the PrometheusRule name only what the bridge exports.

The metric names come from the bridge itself: its Metrics and HealthMetrics
are made on one registry and every series name they can export is listed
(counters' `_total`, histograms' `_bucket`/`_sum`/`_count`), rather than
read out of the source with a regex that a rename could slip past.

PromQL is parsed with `promql-parser` (PyPI; Python bindings of GreptimeDB's
Rust port of the Prometheus parser, the same grammar and the same errors as
Prometheus's own), not a hand-written subset: a subset would pass what
Prometheus refuses the day someone writes a construct the subset lacks.
Grafana's variables ($target, $__rate_interval) are replaced by values of
the same type before parsing, as Grafana does before it sends a query.

The PrometheusRule is validated against ../shared/schemas where that has a
PrometheusRule schema, else against one made by `gitops-bridge schemas
import` from the hand-made CRD in tests/health/crds (../shared has none today).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.validation.crds import schema_files, write_schema_files
from bridge.validation.schemas import validate_document

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "components" / "grafana-dashboard" / "gitops-bridge.json"
RULE = DEPLOY / "components" / "prometheusrule" / "prometheusrule.yaml"
SHARED_SCHEMAS = REPO.parent / "shared" / "schemas"
CRD = Path(__file__).parent / "crds" / "monitoring.coreos.com_prometheusrules.yaml"
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${target}": ".*",
    "$target": ".*",
}


def exported_metric_names() -> set[str]:
    """Every series name the bridge can put on /metrics."""
    try:  # where #21 moves it
        from bridge.observability.metrics import Metrics  # type: ignore[import-not-found]
    except ImportError:
        from bridge.observability.metrics import Metrics
    from bridge.health.metrics import HealthMetrics

    metrics = Metrics()
    HealthMetrics(metrics.registry)
    names: set[str] = set()
    for family in metrics.registry.collect():
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created", ""),
        }.get(family.type, ("",))
        names |= {family.name + s for s in suffixes}
    return names


def parse(expr: str) -> Any:
    import promql_parser

    text = expr
    for variable, value in GRAFANA_VARIABLES.items():
        text = text.replace(variable, value)
    assert "$" not in text, f"an unknown Grafana variable in {expr!r}"
    try:
        return promql_parser.parse(text)
    except ValueError as e:
        raise AssertionError(f"PromQL does not parse: {expr!r}: {e}") from None


def metric_names(expr: str) -> set[str]:
    import promql_parser

    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            if name is None:  # {__name__="..."}
                match = re.search(r'__name__="([^"]+)"', str(node.matchers))
                name = match[1] if match else None
            assert name, f"a selector without a metric name in {expr!r}"
            found.add(name)

    promql_parser.walk(parse(expr), visit)
    return found


def unknown_metrics(exprs: list[str]) -> dict[str, set[str]]:
    known = exported_metric_names()
    out = {}
    for expr in exprs:
        missing = metric_names(expr) - known
        if missing:
            out[expr] = missing
    return out


def dashboard_queries(doc: dict[str, Any]) -> list[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    exprs = [t["expr"] for p in panels(doc["panels"]) for t in p.get("targets", [])]
    for variable in doc["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else None
        if text:
            match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", text)
            assert match, f"a variable query this test does not read: {text!r}"
            exprs.append(match[1])
    return exprs


def rule_doc() -> dict[str, Any]:
    doc = yaml.safe_load(RULE.read_text())
    assert isinstance(doc, dict)
    return doc


def alerts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"]]


# --- the check itself ------------------------------------------------------------------


def test_the_check_catches_an_unknown_metric_and_bad_promql() -> None:
    known = exported_metric_names()
    assert {"gitops_bridge_commits_total", "gitops_bridge_cycle_duration_seconds_bucket"} <= known
    assert {
        "gitops_bridge_health_source_up",
        "gitops_bridge_revision_stage_seconds_bucket",
    } <= known
    assert unknown_metrics(["rate(gitops_bridge_commits_total[5m])"]) == {}
    assert unknown_metrics(
        ['sum(rate(gitops_bridge_commit_total{target=~"$target"}[$__rate_interval]))']
    ) == {
        'sum(rate(gitops_bridge_commit_total{target=~"$target"}[$__rate_interval]))': {
            "gitops_bridge_commit_total"
        }
    }
    assert unknown_metrics(['{__name__="gitops_bridge_nope"}']) != {}
    with pytest.raises(AssertionError, match="does not parse"):
        parse("sum(rate(gitops_bridge_commits_total[5m])")
    with pytest.raises(AssertionError, match="does not parse"):
        parse("gitops_bridge_commits_total > > 1")


# --- the dashboard -----------------------------------------------------------------------


def test_every_dashboard_query_parses_and_names_exported_metrics() -> None:
    doc = json.loads(DASHBOARD.read_text())
    exprs = dashboard_queries(doc)
    assert len(exprs) >= 15
    assert unknown_metrics(exprs) == {}


def test_the_dashboard_shows_every_health_series() -> None:
    doc = json.loads(DASHBOARD.read_text())
    used = set().union(*(metric_names(e) for e in dashboard_queries(doc)))
    for name in (
        "gitops_bridge_health_deployments",
        "gitops_bridge_revision_stage_seconds_bucket",
        "gitops_bridge_health_source_up",
        "gitops_bridge_health_webhook_requests_total",
        "gitops_bridge_deployment_degraded",
        "gitops_bridge_deployment_waiting_since_timestamp_seconds",
        "gitops_bridge_last_successful_cycle_timestamp_seconds",
        "gitops_bridge_deletions_held",
    ):
        assert name in used, name


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "gitops-bridge" and doc["title"] and isinstance(doc["schemaVersion"], int)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel.get("targets", []):
            # The data source is chosen at import, never a uid from someone's Grafana.
            assert target["datasource"]["uid"] == "${datasource}"
    names = [v["name"] for v in doc["templating"]["list"]]
    assert names == ["datasource", "target"]


# --- the PrometheusRule ------------------------------------------------------------------


@pytest.fixture(scope="module")
def rule_schema_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if (SHARED_SCHEMAS / "monitoring.coreos.com" / "prometheusrule_v1.json").is_file():
        return SHARED_SCHEMAS
    out = tmp_path_factory.mktemp("prometheusrule-schema")
    write_schema_files(schema_files([CRD]), out)
    return out


def test_the_rule_validates_against_its_schema(rule_schema_dir: Path) -> None:
    finding = validate_document(rule_doc(), schema_dir=rule_schema_dir, strict=True)
    assert finding.unchecked is None and finding.errors == ()
    # The schema really checks: a typo and a bad duration are refused.
    broken = rule_doc()
    broken["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    broken["spec"]["groups"][0]["rules"][1]["annotation"] = {}
    errors = validate_document(broken, schema_dir=rule_schema_dir, strict=True).errors
    assert len(errors) == 2, errors


def test_every_alert_expression_parses_and_names_exported_metrics() -> None:
    exprs = [rule["expr"] for rule in alerts(rule_doc())]
    assert unknown_metrics(exprs) == {}


def test_the_alerts_the_issue_asks_for_each_with_severity_and_words() -> None:
    import promql_parser

    rules = alerts(rule_doc())
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for wanted in (
        "GitopsBridgeNotCycling",
        "GitopsBridgeDeletionsHeld",
        "GitopsBridgeDeploymentDegraded",
        "GitopsBridgeDeploymentNotSynced",
        "GitopsBridgeHealthSourceUnreachable",
    ):
        assert wanted in names
    for rule in rules:
        assert "record" not in rule
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        promql_parser.parse_duration(rule["for"])
        # Templates in annotations use only labels the expression keeps.
        for label in re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])):
            assert label in rule["expr"], (rule["alert"], label)


def test_both_components_build_with_kustomize(tmp_path: Path) -> None:
    from bridge.validation.kustomize import kustomize_build

    overlay = tmp_path / "overlay"
    shutil.copytree(DEPLOY, overlay / "deploy")
    (overlay / "kustomization.yaml").write_text(
        "resources: [deploy]\n"
        "components: [deploy/components/prometheusrule, deploy/components/grafana-dashboard]\n"
    )
    objects = {(o["kind"], o["metadata"]["name"]): o for o in kustomize_build(overlay)}
    assert ("PrometheusRule", "gitops-bridge") in objects
    dashboard = objects[("ConfigMap", "gitops-bridge-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["gitops-bridge.json"]) == json.loads(DASHBOARD.read_text())
