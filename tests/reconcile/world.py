"""A whole bridge world for end-to-end tests: a real local control plane on
loopback, real bare git remotes, real sops with an age key made for the test."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.config import Settings, load_settings
from bridge.controlplane.admin import deployment_request
from bridge.formats.canonical_yaml import dumps
from bridge.reconcile.outcomes import CycleReport
from tests.sopstools import new_identity

GIT_ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}


def git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=check
    )
    return out.stdout


@dataclass
class World:
    root: Path
    url: str
    api_key: str
    bridge_key: str
    age_identity: Any
    recipient: str
    admin: Any
    listener_id: str
    namespaces: tuple[str, ...]
    remotes: dict[str, Path] = field(default_factory=dict)
    config_overrides: dict[str, Any] = field(default_factory=dict)
    secret_values: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "LANGSMITH_API_KEY": self.api_key,
            "GITOPS_BRIDGE_KEY": self.bridge_key,
        }

    def config(self, **overrides: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "controlPlane": {
                "url": self.url,
                "apiKeyEnv": "LANGSMITH_API_KEY",
                "listenerId": self.listener_id,
                "pollInterval": 1,
                "timeout": 5,
            },
            "targets": [
                {"namespace": ns, "repo": self.remotes[ns].as_uri(), "branch": "main"}
                for ns in self.namespaces
            ],
            "git": {
                "authorName": "GitOps Bridge Test",
                "authorEmail": "bridge@test.invalid",
                "workdir": str(self.root / "workdir"),
                "pushRetries": 3,
            },
            "secrets": {
                "provider": "sops",
                "bridgeKeyEnv": "GITOPS_BRIDGE_KEY",
                "sops": {"ageRecipients": [self.recipient]},
            },
        }
        for key, value in {**self.config_overrides, **overrides}.items():
            node = doc
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        return doc

    def write_config(self, **overrides: Any) -> Path:
        path = self.root / "bridge.yaml"
        path.write_text(dumps(self.config(**overrides)))
        return path

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(self.write_config(**overrides), env=self.env)

    def create(
        self,
        name: str,
        namespace: str | None = None,
        image: str = "registry.example.com/acme/agent:1.0.0",
        secrets_: dict[str, str] | None = None,
        resource_spec: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        secret_list = [{"name": k, "value": v} for k, v in (secrets_ or {}).items()]
        self.secret_values.extend(v for v in (secrets_ or {}).values())
        dep: dict[str, Any] = self.admin.create_deployment(
            deployment_request(
                name,
                self.listener_id,
                namespace or self.namespaces[0],
                image,
                resource_spec=resource_spec,
                secrets=secret_list,
            )
        )
        return dep

    def cycle(self, settings: Settings | None = None, **kwargs: Any) -> CycleReport:
        from bridge.commands.wiring import make_reconciler

        reconciler, close = make_reconciler(settings or self.settings(), **kwargs)
        try:
            return reconciler.run_cycle()
        finally:
            close()

    def log(self, namespace: str | None = None, fmt: str = "%H%x00%s%x00%B%x1e") -> list[str]:
        remote = self.remotes[namespace or self.namespaces[0]]
        return [
            c.strip("\n")
            for c in git("log", f"--format={fmt}", "main", cwd=remote, check=False).split("\x1e")
            if c.strip()
        ]

    def subjects(self, namespace: str | None = None) -> list[str]:
        return [c.split("\x00")[1] for c in self.log(namespace)]

    def head(self, namespace: str | None = None) -> str:
        remote = self.remotes[namespace or self.namespaces[0]]
        return git(
            "rev-parse", "--verify", "-q", "refs/heads/main", cwd=remote, check=False
        ).strip()

    def tree(self, namespace: str | None = None, ref: str = "main") -> dict[str, str]:
        """Path -> blob id of every file at `ref` of a remote ({} before the first push)."""
        remote = self.remotes[namespace or self.namespaces[0]]
        out = git("ls-tree", "-r", "--full-tree", ref, cwd=remote, check=False)
        tree: dict[str, str] = {}
        for line in out.splitlines():
            meta, _, path = line.partition("\t")
            tree[path] = meta.split()[2]
        return tree

    def read(self, path: str, namespace: str | None = None, ref: str = "main") -> bytes:
        """The bytes of one file at `ref` of a remote."""
        remote = self.remotes[namespace or self.namespaces[0]]
        return subprocess.run(
            ["git", "show", f"{ref}:{path}"],
            cwd=remote,
            env=GIT_ENV,
            capture_output=True,
            check=True,
        ).stdout

    def clone(self, namespace: str | None = None, dest: Path | None = None) -> Path:
        dest = dest or self.root / f"clone-{secrets.token_hex(4)}"
        git("clone", "-q", self.remotes[namespace or self.namespaces[0]].as_uri(), str(dest))
        git("config", "user.name", "A Human", cwd=dest)
        git("config", "user.email", "human@example.com", cwd=dest)
        return dest


@contextmanager
def make_world(
    root: Path, namespaces: tuple[str, ...] = ("agents", "staging"), *, faults: bool = False
) -> Iterator[World]:
    """`faults=True` serves `/_faults` (fault injection) on the control plane."""
    from bridge.controlplane.admin import AdminClient
    from bridge.localplane.server import start_in_thread

    api_key = "lsv2_pt_" + secrets.token_hex(16)
    bridge_key = secrets.token_hex(32)
    identity = new_identity()
    key_file = root / "age.agekey"
    key_file.write_text(f"{identity}\n")
    key_file.chmod(0o600)
    server = start_in_thread(db=root / "cp.db", api_key=api_key, faults=faults)
    try:
        with AdminClient.connect(server.url, api_key, timeout=5) as admin:
            listener = admin.create_listener("test-cluster", list(namespaces))
            world = World(
                root=root,
                url=server.url,
                api_key=api_key,
                bridge_key=bridge_key,
                age_identity=identity,
                recipient=str(identity.to_public()),
                admin=admin,
                listener_id=listener["id"],
                namespaces=namespaces,
            )
            for ns in namespaces:
                remote = root / "remotes" / f"{ns}.git"
                remote.parent.mkdir(parents=True, exist_ok=True)
                git("init", "-q", "--bare", "-b", "main", str(remote))
                git("config", "core.logAllRefUpdates", "always", cwd=remote)
                world.remotes[ns] = remote
            yield world
    finally:
        server.stop()
