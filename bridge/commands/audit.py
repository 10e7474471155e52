"""`gitops-bridge audit`: who deployed what, where, when, from which revision,
signed by whom — from git history alone (no control plane needed).

For each target the auditor fetches the branch (through the same clone the
bridge uses) and walks every commit that touched the namespace folder:

- a **bridge commit** (subject and all seven trailers) is checked against its
  own diff: it may touch only the folder of the deployment its trailers name
  (plus the namespace kustomization and the README), its `Namespace` must be the
  target's, and the state file it wrote must carry the same `Deployment-Id`;
- any other commit that touches an owned folder is **drift** (a human or
  another tool edited what the bridge owns); an operator's approval file
  (`.gitops-bridge/approve-delete`) is not owned: committing it is the
  documented way to approve held deletions;
- an approved deletion (`Approved-By`) must name the author of the commit that
  last changed the approval file before it, and that file must list the
  deployment; only such a deletion may remove the approval file;
- signatures: with `--allowed-signers` (SSH) or an OpenPGP `git.signing` key,
  every bridge commit must carry a good signature *by the expected signer* —
  git accepts a trusted key under any name, so the principal (SSH) or key
  fingerprint (OpenPGP) is compared with the bridge's identity here.

The JSON output is stable (schema 1, documented in the README); the Markdown
output is for a change ticket. Findings make the exit code 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bridge.commands.pullaudit import Reviews, reviews_for
from bridge.commands.pullaudit import describe as describe_review
from bridge.config import Settings, Target
from bridge.formats.approvals import (
    APPROVAL_FILE,
    APPROVAL_FOLDER,
    HELD_FILE,
    ApprovalFileError,
    parse_approval,
    safe_text,
)
from bridge.formats.commits import ParsedCommit, parse
from bridge.formats.state import STATE_FILE, DeploymentState
from bridge.observability.display import escape
from bridge.publishing.history import (
    CommitRecord,
    last_author,
    list_files,
    read_file,
    read_history,
)

AUDIT_SCHEMA = 1
GOOD = {"G"}  # git's %G?: good signature from a valid key
GOOD_UNKNOWN_TRUST = {"U"}  # good signature, key of unknown trust (OpenPGP)


@dataclass
class Finding:
    type: str  # drift | unsigned | bad-signature | unknown-signer | trailer-mismatch
    target: str
    commit: str
    detail: str
    author: str = ""
    time: str = ""
    paths: list[str] = field(default_factory=list)


@dataclass
class Revision:
    kind: str
    revision_id: str | None
    image: str | None
    commit: str
    time: str
    author: str
    signature: dict[str, Any]
    approved_by: str | None = None  # Approved-By of an approved deletion
    # When the consumer synced it and it became healthy, where the health
    # read-back saw it (the road `run` keeps in the workdir); None: not known.
    synced: str | None = None
    healthy: str | None = None
    merged: str | None = None  # pull-request mode: when the road saw its pull request merged
    # Pull-request mode: the pull request that carried it, who approved and merged it.
    review: dict[str, Any] | None = None
    # An approved deletion in pull-request mode: the held-deletions pull request's review.
    approval_review: dict[str, Any] | None = None


@dataclass
class DeploymentHistory:
    target: str
    cluster: str
    namespace: str
    name: str
    deployment_id: str
    history: list[Revision] = field(default_factory=list)
    current_revision: str | None = None
    current_commit: str | None = None
    deleted: bool = False


@dataclass
class AuditReport:
    targets: list[dict[str, Any]] = field(default_factory=list)
    deployments: list[DeploymentHistory] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> str:
        doc = {
            "schema": AUDIT_SCHEMA,
            "targets": self.targets,
            "deployments": [
                {
                    "target": d.target,
                    "cluster": d.cluster,
                    "namespace": d.namespace,
                    "name": d.name,
                    "deploymentId": d.deployment_id,
                    "currentRevision": d.current_revision,
                    "currentCommit": d.current_commit,
                    "deleted": d.deleted,
                    "history": [
                        {
                            "kind": r.kind,
                            "revisionId": r.revision_id,
                            "image": r.image,
                            "commit": r.commit,
                            "time": r.time,
                            "author": r.author,
                            "signature": r.signature,
                            "approvedBy": r.approved_by,
                            "merged": r.merged,
                            "synced": r.synced,
                            "healthy": r.healthy,
                            "review": r.review,
                            "approvalReview": r.approval_review,
                        }
                        for r in d.history
                    ],
                }
                for d in sorted(
                    self.deployments, key=lambda d: (d.target, d.cluster, d.name, d.deployment_id)
                )
            ],
            "findings": [
                {
                    "type": f.type,
                    "target": f.target,
                    "commit": f.commit,
                    "author": f.author,
                    "time": f.time,
                    "paths": f.paths,
                    "detail": f.detail,
                }
                for f in self.findings
            ],
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    def to_markdown(self) -> str:
        out = ["# Deployment audit", ""]
        for t in self.targets:
            out.append(
                f"- target `{_md(t['namespace'])}`: `{_md(t['repo'])}` branch "
                f"`{_md(t['branch'])}` at `{_md((t['head'] or 'empty')[:12])}`"
            )
        out += ["", f"## Findings ({len(self.findings)})", ""]
        if self.findings:
            out += ["| type | target | commit | author | detail |", "|---|---|---|---|---|"]
            for f in self.findings:
                out.append(
                    f"| {_md(f.type)} | {_md(f.target)} | `{_md(f.commit[:12])}` | "
                    f"{_md(f.author)} | {_md(f.detail)} |"
                )
        else:
            out.append("None: every commit on owned folders was made by the bridge, as described.")
        out += ["", "## Deployments", ""]
        for d in sorted(self.deployments, key=lambda d: (d.target, d.name)):
            state = "deleted" if d.deleted else f"revision `{_md(d.current_revision or '-')}`"
            out += [
                f"### {_md(d.namespace)}/{_md(d.name)} (`{_md(d.deployment_id)}`, cluster "
                f"`{_md(d.cluster)}`): {state}",
                "",
                "| when | change | revision | image | commit | author | signature | synced "
                "| healthy |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for r in d.history:
                sig = r.signature
                sig_text = sig["status"] + (f" by {sig['signer']}" if sig.get("signer") else "")
                change = f"{r.kind} (approved by {r.approved_by})" if r.approved_by else r.kind
                if r.review:
                    change += f" ({describe_review(r.review)})"
                if r.approval_review:
                    change += f" (deletion approved in {describe_review(r.approval_review)})"
                out.append(
                    f"| {_md(r.time)} | {_md(change)} | `{_md(r.revision_id or '-')}` | "
                    f"{_md(r.image or '')} | `{_md(r.commit[:12])}` | {_md(r.author)} | "
                    f"{_md(sig_text)} | {_md(r.synced or '-')} | {_md(r.healthy or '-')} |"
                )
            out.append("")
        return "\n".join(out).rstrip() + "\n"


def _md(text: object) -> str:
    """A value from git (names, authors, paths, trailers: anyone with push access
    wrote them) for one Markdown line or table cell: control characters
    escaped (bridge.observability.display), `|` escaped so it cannot open a column."""
    return escape(text).replace("|", "\\|")


# --- the audit ----------------------------------------------------------------


def _signature(
    rec: CommitRecord, expect: str | None, expect_key: str | None, checked: bool
) -> dict[str, Any]:
    status = {
        "G": "good",
        "U": "good-untrusted-key",
        "B": "bad",
        "X": "expired",
        "Y": "expired-key",
        "R": "revoked-key",
        "E": "unverifiable",
        "N": "unsigned",
    }.get(rec.signature, "unknown")
    verified = False
    if rec.signature in GOOD | GOOD_UNKNOWN_TRUST:
        if expect_key:
            verified = rec.key.upper().endswith(
                expect_key.upper()[-16:]
            ) or expect_key.upper().endswith(rec.key.upper())
        elif expect:
            verified = rec.signer == expect
        if rec.signature in GOOD_UNKNOWN_TRUST and not expect_key:
            verified = False
    return {
        "status": status if checked or rec.signature == "N" else status + " (not checked)",
        "signer": rec.signer or None,
        "key": rec.key or None,
        "verified": verified,
    }


def audit_target(
    target: Target,
    git_dir: Path,
    ref: str,
    head: str | None,
    *,
    bridge_email: str,
    allowed_signers: Path | None,
    gnupg_home: Path | None,
    signing_key: str | None,
    require_signed: bool,
    reviews: Reviews | None = None,
) -> tuple[list[DeploymentHistory], list[Finding]]:
    if head is None:
        return [], []
    audit = _TargetAudit(
        target,
        git_dir,
        reviews=reviews,
        bridge_email=bridge_email,
        checked=allowed_signers is not None or (signing_key is not None and gnupg_home is not None),
        signing_key=signing_key,
        require_signed=require_signed,
    )
    for rec in read_history(git_dir, ref, allowed_signers=allowed_signers, gnupg_home=gnupg_home):
        audit.commit(rec)
    audit.settle(head)
    return list(audit.deployments.values()), audit.findings


class _TargetAudit:
    """One target's history read commit by commit: the bridge's own commits become
    revisions of deployments, anything else on owned paths a finding."""

    def __init__(
        self,
        target: Target,
        git_dir: Path,
        *,
        reviews: Reviews | None = None,
        bridge_email: str,
        checked: bool,
        signing_key: str | None,
        require_signed: bool,
    ) -> None:
        self.target = target
        self.ns = target.namespace
        self.git_dir = git_dir
        self.base = PurePosixPath(target.path) if target.path else PurePosixPath()
        self.readme = str(self.base / "README.md")
        self.bridge_email = bridge_email
        self.checked = checked
        self.signing_key = signing_key
        self.require_signed = require_signed
        self.deployments: dict[str, DeploymentHistory] = {}
        self.findings: list[Finding] = []
        self.reviews = reviews
        self.landed: dict[str, dict[str, Any]] = {}  # commit -> review of its pull request
        self._approvals: list[tuple[Revision, str | None]] = []

    def owned(self, path: str) -> tuple[str, str] | bool | None:
        """(cluster, folder) for a path in a deployment folder; True for shared files."""
        p = PurePosixPath(path)
        try:
            rel = p.relative_to(self.base)
        except ValueError:
            return None
        parts, ns = rel.parts, self.ns
        if str(p) == self.readme:
            return True
        if len(parts) == 3 and parts[1] == ns and parts[2] == "kustomization.yaml":
            return True
        if len(parts) >= 3 and parts[1] == ns and parts[2] == APPROVAL_FOLDER:
            # The operator's approval file is theirs to commit; the held record is
            # the bridge's (a human edit of it is drift).
            return True if "/".join(parts[2:]) == HELD_FILE else None
        if len(parts) >= 4 and parts[1] == ns and (self.target.cluster in (None, parts[0])):
            return (parts[0], parts[2])
        return None

    def commit(self, rec: CommitRecord) -> None:
        folders: set[tuple[str, str]] = set()
        shared = False
        for path in rec.paths:
            o = self.owned(path)
            if isinstance(o, tuple):
                folders.add(o)
            elif o is True:
                shared = True
        if not folders and not shared:
            # The merge of a held-deletions pull request touches only the approval
            # file: noted, so the deletions it approves get its review.
            if self.reviews is not None and parse(rec.message) is None:
                self._reviewed(rec, folders)
            return
        who = f"{rec.author_name} <{rec.author_email}>"
        parsed = parse(rec.message)
        if parsed is None and self.reviews is not None and self._reviewed(rec, folders):
            return
        if parsed is None:
            self._find(
                "drift", rec, "a commit not made by the bridge changed files the bridge owns"
            )
            return
        wanted = (parsed.trailers.get("Cluster", ""), parsed.trailers.get("Deployment-Name", ""))
        problems = self._problems(rec, parsed, folders, wanted)
        if problems:
            self._find("trailer-mismatch", rec, "; ".join(problems))
        sig = _signature(rec, self.bridge_email, self.signing_key, self.checked)
        self._signature_findings(rec, sig)
        dep_id = parsed.trailers.get("Deployment-Id", "")
        hist = self.deployments.get(dep_id)
        if hist is None:
            hist = self.deployments[dep_id] = DeploymentHistory(
                target=self.ns,
                cluster=wanted[0],
                namespace=self.ns,
                name=wanted[1],
                deployment_id=dep_id,
            )
        hist.name = wanted[1]
        hist.history.append(
            Revision(
                kind=parsed.kind,
                revision_id=parsed.revision_id,
                image=parsed.image,
                commit=rec.sha,
                time=rec.commit_time,
                author=who,
                signature=sig,
                approved_by=parsed.approved_by,
            )
        )
        if parsed.approved_by and self.reviews is not None:
            self._approvals.append((hist.history[-1], self._approval_commit(rec, wanted[0])))

    def _approval_commit(self, rec: CommitRecord, cluster: str) -> str | None:
        """The commit of the approval file an approved deletion rests on."""
        if not rec.parents:
            return None
        path = str(self.base / cluster / self.ns / APPROVAL_FILE)
        last = last_author(self.git_dir, rec.parents[0], path)
        return last[0] if last else None

    def _attach_reviews(self) -> None:
        """Reviews found on merge commits, given to the revisions they carried, once
        the whole history is read (commits of one second come in no fixed order):
        each revision its pull request's; an approved deletion also the review of
        the held-deletions pull request that merged its approval file."""
        for hist in self.deployments.values():
            for revision in hist.history:
                revision.review = revision.review or self.landed.get(revision.commit)
        for revision, approval in self._approvals:
            revision.approval_review = self.landed.get(approval) if approval else None

    def _reviewed(self, rec: CommitRecord, folders: set[tuple[str, str]]) -> bool:
        """A commit of pull-request mode that is not drift: the bridge's merge of
        the base into its head, or a merge or squash of the bridge's pull request
        that the forge vouches for (its revisions get the review)."""
        assert self.reviews is not None
        if self.reviews.own_merge(rec):
            return True
        review = self.reviews.landing(rec)
        if review is None:
            return False
        carried = self.reviews.carried(rec)
        self.landed.update(dict.fromkeys({rec.sha, *carried}, review))
        if carried:
            return True
        # A squash: the forge's commit carries the revisions; the state files say which.
        who = f"{rec.author_name} <{rec.author_email}>"
        for cluster, folder in sorted(folders):
            path = str(self.base / cluster / self.ns / folder / STATE_FILE)
            state = DeploymentState.from_bytes_or_none(read_file(self.git_dir, rec.sha, path))
            if state is None:
                continue
            hist = self.deployments.setdefault(
                state.deployment_id,
                DeploymentHistory(self.ns, cluster, self.ns, folder, state.deployment_id),
            )
            hist.history.append(
                Revision(
                    kind="deploy",
                    revision_id=state.revision_id,
                    image=state.image,
                    commit=rec.sha,
                    time=rec.commit_time,
                    author=who,
                    signature=_signature(rec, None, None, False),
                    review=review,
                )
            )
        return True

    def _find(self, kind: str, rec: CommitRecord, what: str, *, paths: bool = True) -> None:
        who = f"{rec.author_name} <{rec.author_email}>"
        listed = sorted(rec.paths) if paths else []
        self.findings.append(Finding(kind, self.ns, rec.sha, what, who, rec.author_time, listed))

    def _problems(
        self,
        rec: CommitRecord,
        parsed: ParsedCommit,
        folders: set[tuple[str, str]],
        wanted: tuple[str, str],
    ) -> list[str]:
        """Where a bridge commit's subject, trailers and tree disagree."""
        tr, ns = parsed.trailers, self.ns
        problems = []
        if tr.get("Namespace") != ns or parsed.namespace != ns:
            problems.append(f"Namespace trailer {tr.get('Namespace')!r} is not the target's {ns!r}")
        others = folders - {wanted}
        if others:
            problems.append(
                "touches folders of other deployments: "
                + ", ".join(f"{c}/{ns}/{n}" for c, n in sorted(others))
            )
        if parsed.name != wanted[1]:
            problems.append(f"subject names {parsed.name!r}, trailers {wanted[1]!r}")
        problems += _approval_problems(
            self.git_dir, rec, parsed.kind, tr, self.base / wanted[0] / ns
        )
        if parsed.kind == "delete":
            return problems
        state_path = str(self.base / wanted[0] / ns / wanted[1] / STATE_FILE)
        state = DeploymentState.from_bytes_or_none(read_file(self.git_dir, rec.sha, state_path))
        if state is None:
            problems.append(f"no readable {STATE_FILE} in the folder it deploys")
        elif state.deployment_id != tr.get("Deployment-Id"):
            problems.append(
                f"Deployment-Id trailer {tr.get('Deployment-Id')} but the folder holds "
                f"deployment {state.deployment_id}"
            )
        elif state.revision_id != parsed.revision_id and parsed.kind == "deploy":
            problems.append(
                f"Revision-Id trailer {parsed.revision_id} but the folder holds "
                f"revision {state.revision_id}"
            )
        return problems

    def _signature_findings(self, rec: CommitRecord, sig: dict[str, Any]) -> None:
        if not (self.require_signed or self.checked):
            return
        if rec.signature == "N":
            self._find("unsigned", rec, "bridge commit is not signed", paths=False)
        elif rec.signature in ("B", "R"):
            self._find("bad-signature", rec, f"signature is {sig['status']}", paths=False)
        elif self.checked and not sig["verified"]:
            self._find(
                "unknown-signer",
                rec,
                f"signed by {rec.signer or rec.key or 'an unknown key'} "
                f"({sig['status']}), not by the bridge's key",
                paths=False,
            )

    def settle(self, head: str) -> None:
        """What is deployed now: the state files at the head."""
        self._attach_reviews()
        current: dict[str, tuple[str, DeploymentState]] = {}
        base = str(self.base) if str(self.base) != "." else ""
        for path in list_files(self.git_dir, head, base):
            p = PurePosixPath(path)
            if p.name == STATE_FILE and self.owned(path):
                state = DeploymentState.from_bytes_or_none(read_file(self.git_dir, head, path))
                if state is not None:
                    current[state.deployment_id] = (str(p.parent), state)
        for dep_id, hist in self.deployments.items():
            now = current.get(dep_id)
            if now is None:
                hist.deleted = True
                continue
            hist.current_revision = now[1].revision_id
            carried = [r for r in hist.history if r.kind != "delete"]
            hist.current_commit = carried[-1].commit if carried else None


def _approval_problems(
    git_dir: Path, rec: CommitRecord, kind: str, trailers: dict[str, str], ns_dir: PurePosixPath
) -> list[str]:
    """What is wrong with a bridge commit's approval: an `Approved-By` that the
    approval file before it does not bear out, or an approval file removed or
    changed by a commit that carries none."""
    approval = str(ns_dir / APPROVAL_FILE)
    approved_by = trailers.get("Approved-By")
    if approved_by is None:
        if approval in rec.paths:
            return [f"changes {approval} but carries no Approved-By trailer"]
        return []
    parent = rec.parents[0] if rec.parents else None
    data = read_file(git_dir, parent, approval) if parent else None
    if parent is None or data is None:
        return [f"Approved-By {approved_by!r} but there was no {approval} before it"]
    try:
        ids = parse_approval(data)
    except ApprovalFileError as e:
        return [f"Approved-By {approved_by!r} but {approval} before it {e}"]
    problems = []
    if trailers.get("Deployment-Id") not in ids:
        problems.append(f"Approved-By {approved_by!r} but {approval} does not list the deployment")
    last = last_author(git_dir, parent, approval)
    who = f"{safe_text(last[1]) or '?'} <{safe_text(last[2]) or '?'}>" if last else None
    if who != approved_by:
        problems.append(
            f"Approved-By {approved_by!r} but {approval} was last committed by {who} "
            f"in {(last[0] if last else '?')[:12]}"
        )
    return problems


def run_audit(
    settings: Settings,
    *,
    namespace: str | None = None,
    allowed_signers: Path | None = None,
    open_repo: Callable[[Target], Any] | None = None,
) -> AuditReport:
    """Fetch each target and audit its history; GitError when a remote cannot be read."""
    from bridge.commands.forging import use_forge_credentials
    from bridge.publishing.repo import TargetRepo

    opener = open_repo or (lambda t: TargetRepo(t, settings.git))
    signing = settings.git.signing
    report = AuditReport()
    targets: Iterable[Target] = [
        t for t in settings.targets if namespace is None or t.namespace == namespace
    ]
    for target in targets:
        repo = opener(target)
        reviews: Reviews | None = None
        try:
            reviews = reviews_for(settings, target, repo.path)
            if reviews is not None:
                use_forge_credentials(repo, reviews.forge, target)
            head = repo.sync()
            report.targets.append(
                {
                    "namespace": target.namespace,
                    "repo": target.repo,
                    "branch": target.branch,
                    "path": target.path,
                    "head": head,
                }
            )
            deployments, findings = audit_target(
                target,
                repo.path,
                repo.clone.tracking_ref,
                head,
                bridge_email=settings.git.author_email,
                allowed_signers=allowed_signers,
                gnupg_home=signing.gnupg_home if signing and signing.format == "openpgp" else None,
                signing_key=signing.key if signing and signing.format == "openpgp" else None,
                require_signed=signing is not None,
                reviews=reviews,
            )
        finally:
            if reviews is not None:
                reviews.close()
            repo.close()
        report.deployments.extend(deployments)
        report.findings.extend(findings)
    _add_road(report, settings.git.workdir)
    return report


def _add_road(report: AuditReport, workdir: Path) -> None:
    """Each revision's `merged`, `synced` and `healthy` times from the health read-back's
    road, where `run` kept one (git alone cannot say when a cluster applied it)."""
    from bridge.health.assessing import iso
    from bridge.health.road import FILE_NAME, RoadStore

    if not (Path(workdir) / FILE_NAME).is_file():
        return
    road = RoadStore.open(Path(workdir), read_only=True)
    for d in report.deployments:
        for r in d.history:
            found = road.road(d.deployment_id, r.revision_id) if r.revision_id else None
            if found is not None and r.kind != "delete":
                r.merged, r.synced, r.healthy = (
                    iso(found.times.get("merged")),
                    iso(found.times.get("synced")),
                    iso(found.times.get("healthy")),
                )
