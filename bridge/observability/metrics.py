"""Prometheus metrics and health state of a running bridge (SPEC §8).

A private registry (not the global default), so tests and several bridges in
one process never collide. Label values are bounded: targets come from the
config, actions and outcomes from fixed sets, and per-deployment series are
capped at MAX_DEPLOYMENT_SERIES (the rest are counted, not labelled).
"""

from __future__ import annotations

import threading
from typing import Any

MAX_DEPLOYMENT_SERIES = 2000
ERROR_KINDS = ("invalid", "policy", "secrets", "validation", "refused", "internal", "other")


class Metrics:
    def __init__(self) -> None:
        # Imported here: Health (below) is used by every run, the registry
        # only with --listen, and prometheus_client costs ~60 ms to import.
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.cycle_seconds = Histogram(
            "gitops_bridge_cycle_duration_seconds",
            "Duration of one reconcile cycle.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.deployments = Gauge(
            "gitops_bridge_deployments",
            "Deployments per target by what the last cycle did with them.",
            ["target", "state"],
            registry=r,
        )
        self.commits = Counter(
            "gitops_bridge_commits_total", "Commits made, by kind.", ["target", "kind"], registry=r
        )
        self.pushes = Counter(
            "gitops_bridge_pushes_total",
            "Pushes, by outcome (ok, rejected, error).",
            ["target", "outcome"],
            registry=r,
        )
        self.requests = Counter(
            "gitops_bridge_control_plane_requests_total",
            "Control-plane HTTP requests by status code (or 'error' for no response).",
            ["status"],
            registry=r,
        )
        self.last_success = Gauge(
            "gitops_bridge_last_successful_cycle_timestamp_seconds",
            "Unix time the last cycle finished with every target reconciled.",
            registry=r,
        )
        self.deployment_failing = Gauge(
            "gitops_bridge_deployment_failing",
            "1 when the deployment's last cycle failed, by error kind.",
            ["target", "deployment", "kind"],
            registry=r,
        )
        self.deletions_held = Gauge(
            "gitops_bridge_deletions_held",
            "Deletions the mass-delete guard holds for approval, per target.",
            ["target"],
            registry=r,
        )
        self.internal_errors = Counter(
            "gitops_bridge_internal_errors_total",
            "Unexpected exceptions (a bug or an input the bridge does not handle), by where "
            "they were contained: deployment, target or cycle. The rest went on.",
            ["where"],
            registry=r,
        )
        self.failing_unlabelled = Gauge(
            "gitops_bridge_deployments_failing_unlabelled",
            f"Failing deployments beyond the first {MAX_DEPLOYMENT_SERIES} series.",
            registry=r,
        )
        self._pull_metrics()
        self._lock = threading.Lock()
        self._failing: set[tuple[str, str, str]] = set()
        self._state_keys: set[tuple[str, str]] = set()
        self._merged: set[tuple[str, int]] = set()
        self._pull_keys: set[tuple[str, str]] = set()

    def _pull_metrics(self) -> None:
        """Pull-request mode's series (bounded labels: targets, two kinds)."""
        from prometheus_client import Counter, Gauge

        r = self.registry
        self.pulls_open = Gauge(
            "gitops_bridge_pull_requests_open",
            "Open pull requests of pull-request targets (paused ones included), by kind "
            "(changes, held-deletions).",
            ["target", "kind"],
            registry=r,
        )
        self.pull_oldest = Gauge(
            "gitops_bridge_pull_request_oldest_age_seconds",
            "Age of the oldest open pull request of a target (0: none open).",
            ["target"],
            registry=r,
        )
        self.pull_merges = Counter(
            "gitops_bridge_pull_request_merges_total",
            "Pull requests of the bridge's seen merged.",
            ["target"],
            registry=r,
        )

    # -- hooks used by the reconciler wiring (running.make_reconciler)
    def control_plane_request(self, status: str) -> None:
        self.requests.labels(status=status).inc()

    def commit(self, target: str, kind: str) -> None:
        self.commits.labels(target=target, kind=kind).inc()

    def push(self, target: str, outcome: str) -> None:
        self.pushes.labels(target=target, outcome=outcome).inc()

    def internal_error(self, where: str) -> None:
        self.internal_errors.labels(where=where).inc()

    def pull_merged(self, target: str, number: int) -> None:
        """A merged pull request, counted once per process however often it is seen."""
        with self._lock:
            if (target, number) in self._merged:
                return
            self._merged.add((target, number))
        self.pull_merges.labels(target=target).inc()

    def watch_forges(self, hosts: Any) -> None:
        """Serve the forge hosts' remaining quota and write budget (`ForgeHosts`)."""
        self.registry.register(_ForgeQuotas(hosts))

    def _record_pulls(self, report: Any, now: float) -> None:
        """Open pull requests and the age of the oldest, per pull-request target."""
        seen: set[tuple[str, str]] = set()
        for t in report.targets:
            pulls = getattr(t, "pulls", None)
            if pulls is None:
                continue
            ns = t.target.namespace
            counts = {"changes": 0, "held-deletions": 0}
            oldest = 0.0
            for pull in pulls:
                if pull.state in ("open", "paused") and pull.number is not None:
                    counts[pull.kind] = counts.get(pull.kind, 0) + 1
                    if pull.created_at is not None:
                        oldest = max(oldest, now - pull.created_at)
            for kind, n in counts.items():
                self.pulls_open.labels(target=ns, kind=kind).set(n)
                seen.add((ns, kind))
            self.pull_oldest.labels(target=ns).set(oldest)
        self._pull_keys |= seen

    def observe_cycle(self, seconds: float) -> None:
        self.cycle_seconds.observe(seconds)

    def record_report(self, report: Any) -> None:
        """Per-target deployment counts and per-deployment failures from a CycleReport."""
        with self._lock:
            counts: dict[tuple[str, str], int] = {}
            failing: set[tuple[str, str, str]] = set()
            for o in report.outcomes:
                counts[(o.target, o.action)] = counts.get((o.target, o.action), 0) + 1
                if o.action in ("failed", "refused"):
                    failing.add((o.target, f"{o.namespace}/{o.name}", _kind(o)))
            for key in self._state_keys - set(counts):
                self.deployments.labels(target=key[0], state=key[1]).set(0)
            for (target, state), n in counts.items():
                self.deployments.labels(target=target, state=state).set(n)
            self._state_keys |= set(counts)
            for gone in self._failing - failing:
                self.deployment_failing.remove(*gone)
            labelled = sorted(failing)[:MAX_DEPLOYMENT_SERIES]
            for series in labelled:
                self.deployment_failing.labels(*series).set(1)
            self._failing = set(labelled)
            self.failing_unlabelled.set(len(failing) - len(labelled))
            for t in report.targets:
                # None: the target was not planned (git failed); keep what is known.
                if getattr(t, "held", None) is not None:
                    self.deletions_held.labels(target=t.target.namespace).set(len(t.held))
            import time

            self._record_pulls(report, time.time())
            if not any(t.error for t in report.targets):
                self.last_success.set(time.time())


class _ForgeQuotas:
    """A collector read at scrape time: each forge host's quota as it last said,
    and the bridge's own write budget use (bounded labels: configured hosts)."""

    def __init__(self, hosts: Any) -> None:
        self.hosts = hosts

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        remaining = GaugeMetricFamily(
            "gitops_bridge_forge_quota_remaining",
            "Requests left in the forge's primary rate limit, as it last reported.",
            labels=["host"],
        )
        limit = GaugeMetricFamily(
            "gitops_bridge_forge_quota_limit",
            "The forge's primary rate limit, as it last reported.",
            labels=["host"],
        )
        writes = GaugeMetricFamily(
            "gitops_bridge_forge_writes",
            "Content-creating requests sent to the forge host in the last minute and hour "
            "(the bridge keeps them under 80 and 500).",
            labels=["host", "window"],
        )
        blocked = GaugeMetricFamily(
            "gitops_bridge_forge_blocked_seconds",
            "Seconds until the forge host may be asked again (it said wait; 0: now).",
            labels=["host"],
        )
        import time

        now = time.time()
        for quota in self.hosts.quotas():
            if quota.remaining is not None:
                remaining.add_metric([quota.host], quota.remaining)
            if quota.limit is not None:
                limit.add_metric([quota.host], quota.limit)
            writes.add_metric([quota.host, "minute"], quota.writes_last_minute)
            writes.add_metric([quota.host, "hour"], quota.writes_last_hour)
            wait = max(0.0, (quota.blocked_until or now) - now)
            blocked.add_metric([quota.host], wait)
        yield from (remaining, limit, writes, blocked)


def _kind(outcome: Any) -> str:
    text = (outcome.error or "").lower()
    if outcome.action == "refused":
        return "refused"
    for kind, needle in (
        ("internal", ": unexpected "),
        ("policy", "breaks policy"),
        ("validation", "do not validate"),
        ("secrets", "secret"),
        ("invalid", ""),
    ):
        if needle in text:
            return kind
    return "other"


class Health:
    """Liveness is the process answering; readiness is a recent successful cycle."""

    def __init__(self, poll_interval: float, clock: Any = None) -> None:
        import time

        self.poll_interval = poll_interval
        self.clock = clock or time.time
        self.started = self.clock()
        self.last_success: float | None = None
        self.last_failure: tuple[float, str] | None = None
        self._lock = threading.Lock()

    def cycle_succeeded(self, when: float) -> None:
        with self._lock:
            self.last_success = when

    def cycle_failed(self, when: float, reason: str) -> None:
        with self._lock:
            self.last_failure = (when, reason)

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            now = self.clock()
            window = 3 * self.poll_interval
            if self.last_success is not None and now - self.last_success <= window:
                return True, f"last successful cycle {now - self.last_success:.0f}s ago"
            why = (
                f"no successful cycle in the last {window:.0f}s"
                if self.last_success is not None
                else "no successful cycle yet"
            )
            if self.last_failure is not None:
                why += f"; last failure: {self.last_failure[1]}"
            return False, why
