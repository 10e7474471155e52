"""Health read-back (issue #23, SPEC §8): did the cluster apply it, is it healthy, how long did it take.

The bridge holds no Kubernetes credentials: it reads what Argo CD and Flux
already expose. This package owns that reading and what it means:

- `settings`: `health.argocd`, `health.flux`, `health.argocdNotifications`.
- Sources, each producing `rules.Observation`s:
  `argocd.ArgoCDClient` (poll) and `argocd.StreamFollower` (stream) for the
  Argo CD API; `webhooks.FluxWebhook` and `webhooks.ArgoCDNotificationsWebhook`
  for the pushed ones, pure request -> `HookResult` functions the `--listen`
  server calls.
- `forgestatus`: commit statuses Flux and Argo CD notifications write on the
  forge, read on the bridge's commits of pull-request targets (`forge-status`).
- `rules`: Application / Flux event / Kustomization conditions -> Observation.
- `observations.ObservationStore`: the latest word per object, duplicates and
  replays dropped.
- `syncing.sync_state` over an injected `TreeReader`, and `assessing.assess`:
  per deployment `health: {sync, status, since, commit, source}`.
- `road.RoadStore`: first-seen time of each stage of each revision, on disk.
- `metrics.HealthMetrics`: the series `/metrics` adds, on the bridge's registry.
- `sources`: the glue `run` starts: `ArgoCDPoller`, `ArgoCDStreamer`, and
  `webhook_routes()` for the `--listen` server.

Layering: may import httpx (the Argo CD client only), bridge.errors,
bridge.redaction, bridge.untrusted and the standard library; never git,
bridge.publishing, bridge.reconcile or bridge.rendering. Importing the
package imports none of its modules: the webhook path does not pay for httpx.
"""
