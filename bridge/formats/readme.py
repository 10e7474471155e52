"""The generated README.md at the top of every target repo (under its `path`).

It tells a person who finds the repo what writes it, what not to edit, and how
to verify a deployment's provenance from git alone. It depends only on the
target and the listener, so it changes (in the same commit as the deployment
change that needs it) only when those do.
"""

from __future__ import annotations

from bridge.config import Target


def target_readme(target: Target, listener_id: str, cluster: str) -> bytes:
    ns_dir = f"{cluster}/{target.namespace}"
    text = f"""# LangSmith Agent Server deployments — `{ns_dir}`

This repository is written by **langsmith-gitops-bridge**, a LangSmith listener
that never touches the cluster. It polls the LangSmith control plane for the
deployments of listener `{listener_id}` and commits one Kustomize root per
deployment; Argo CD or Flux applies them.

| path | what |
|---|---|
| `{ns_dir}/kustomization.yaml` | every deployment of namespace `{target.namespace}` |
| `{ns_dir}/<name>/` | one self-contained Kustomize root per deployment |
| `{ns_dir}/<name>/secret-*.yaml` | encrypted Secrets (SOPS or Sealed Secrets), never plaintext |
| `{ns_dir}/<name>/.gitops-bridge.state` | the bridge's record (input digest, revision, file ids); not a manifest |

**Do not edit the deployment folders by hand.** The bridge owns them: a manual
edit is undone by a `restore(...)` commit on its next cycle. Change the
deployment in LangSmith instead. Files outside those folders are never touched.

Every bridge commit has the subject `deploy(<namespace>/<name>): <image> [revision <id>]`,
`delete(...)`, `restore(...)` or `rekey(...)`, and the trailers `Deployment-Id`,
`Deployment-Name`, `Revision-Id`, `Listener-Id`, `Cluster`, `Namespace` and
`Bridge-Version`. To answer "who deployed what, when, from which revision":

    git log --format='%h %ad %an%n  %s%n%(trailers)' -- {ns_dir}
    gitops-bridge audit --config bridge.yaml --namespace {target.namespace} --output markdown

When the bridge signs its commits, verify them with the bridge's public key:
`git verify-commit <sha>` (SSH: with `gpg.ssh.allowedSignersFile` listing the
bridge's identity; OpenPGP: with its key in your keyring) and check that the
signer is the bridge, not just any trusted key — `gitops-bridge audit
--allowed-signers FILE` does both for every commit and reports commits on these
folders that the bridge did not make.

Preview one deployment: `kubectl kustomize {ns_dir}/<name>`.
"""
    return text.encode()
