"""Secrets end to end (issue 5, SPEC §7) through the real reconciler.

A real local control plane over HTTP, real bare git remotes, the real sops
binary with an age identity made for the test, Sealed Secrets sealed to an
RSA certificate made for the test and unsealed here the way the controller
does. Each test ends with a leak scan of every remote (all refs, all history,
reflogs, dangling objects), the bridge's local clones and everything the bridge
logged or printed, for every secret value, the generated Postgres passwords,
the API key and the bridge key.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.formats.commits import parse
from bridge.formats.state import STATE_FILE, DeploymentState
from bridge.validation.folders import default_schema_dir
from bridge.validation.schemas import validate_document
from tests.leakscan import scan_repo, scan_text
from tests.reconcile.world import World, git, make_world
from tests.secrets.test_sealed import Controller
from tests.sopstools import new_identity, sops_decrypt_raw

NS = "test-cluster/agents"
STAGING = "test-cluster/staging"
# Long, distinctive values; one with URI/YAML specials and non-ASCII, one multi-line,
# so that quoting, escaping and encoding slips would show up in the leak scan.
ALPHA = {
    "OPENAI_API_KEY": "sk-alpha-" + "Q7w8E9r0T1y2" * 3,
    "WEBHOOK_TOKEN": "wh/tok+en=&?#: 'q' \"dq\" ünï-" + "x4c5v6b7",
    "SIGNING_PEM": "-----BEGIN KEY-----\nMIIBalphaQ3bXVsdGls\naW5lc2VjcmV0==\n-----END KEY-----\n",
}
BETA = {"BETA_TOKEN": "tok-beta-" + "m3n4b5v6c7x8" * 2}
GAMMA = {"GAMMA_SECRET": "gamma-secret-" + "z1x2c3v4b5n6" * 2}


# --- capture of everything the bridge says ---------------------------------------


class _Capture(logging.Handler):
    """Every record of the `bridge` loggers, unscrubbed: the message, every attribute
    (extras included) and any traceback, as the raw material a formatter would show."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.getMessage()]
        parts += [f"{k}={v!s}" for k, v in vars(record).items() if k not in ("msg", "args")]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        self.lines.append(" ".join(parts))


class Output:
    """What the bridge logged in process and printed from the CLI."""

    def __init__(self, capture: _Capture) -> None:
        self.capture = capture
        self.printed: list[str] = []

    @property
    def text(self) -> str:
        return "\n".join([*self.capture.lines, *self.printed])


@pytest.fixture
def output() -> Iterator[Output]:
    logger = logging.getLogger("bridge")
    capture = _Capture()
    level = logger.level
    # First in line: a scrubbing filter on a later handler rewrites the record in place.
    logger.handlers.insert(0, capture)
    logger.setLevel(logging.DEBUG)
    try:
        yield Output(capture)
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as w:
        yield w


def cli(world: World, output: Output, *args: str) -> subprocess.CompletedProcess[str]:
    config = world.write_config()
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", *args, "--config", str(config)],
        env=world.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output.printed += [proc.stdout, proc.stderr]
    return proc


# --- decryption, as Flux's kustomize-controller and the Sealed Secrets controller do ---


def age_key_file(directory: Path, identity: Any) -> Path:
    path = directory / f"age-{str(identity.to_public())[4:16]}.key"
    path.write_text(f"{identity}\n")
    path.chmod(0o600)
    return path


def sops_decrypt(data: bytes, key_file: Path) -> dict[str, str] | None:
    """stringData of a SOPS-encrypted Secret, or None when this key cannot open it."""
    proc = sops_decrypt_raw(data, key_file)
    if proc.returncode != 0:
        return None
    doc = yaml.safe_load(proc.stdout)
    assert "sops" not in doc
    return {str(k): str(v) for k, v in doc["stringData"].items()}


def check_postgres(values: dict[str, str], host: str) -> str:
    """The generated password, after checking the connection strings carry it."""
    password = values["POSTGRES_PASSWORD"]
    assert len(password) >= 32 and password.isalnum(), "weak or odd generated password"
    uri = f"postgres://postgres:{password}@{host}:5432/postgres?sslmode=disable"
    assert values["POSTGRES_URI"] == uri
    assert values["DATABASE_URI"] == uri
    return password


def secret_files(tree: dict[str, str]) -> dict[str, str]:
    return {p: b for p, b in tree.items() if Path(p).name.startswith("secret-")}


def outcome_lines(stdout: str) -> dict[str, str]:
    """`<namespace>/<name> (<id>): <action>` lines of `rekey`, as {where: action}."""
    lines = {}
    for line in stdout.splitlines():
        where, sep, rest = line.partition(" (")
        if sep and "): " in rest and "/" in where and " " not in where:
            lines[where] = rest.rsplit("): ", 1)[1]
    return lines


def commits_since(world: World, namespace: str, since: str) -> list[tuple[str, str]]:
    """(sha, full message) of the commits after `since` on main, oldest first."""
    remote = world.remotes[namespace]
    rng = f"{since}..main" if since else "main"
    out = git("log", "--reverse", "--format=%H%x00%B%x1e", rng, cwd=remote, check=False)
    commits = []
    for chunk in out.split("\x1e"):
        if chunk.strip():
            sha, _, message = chunk.strip("\n").partition("\x00")
            commits.append((sha, message))
    return commits


def changed_files(world: World, namespace: str, sha: str) -> set[str]:
    out = git("show", "--name-only", "--format=", sha, cwd=world.remotes[namespace])
    return set(out.split())


def assert_nothing_leaked(world: World, output: Output, *extra: str) -> None:
    needles = [*world.secret_values, world.api_key, world.bridge_key, *extra]
    repos = list(world.remotes.values())
    # The bridge's own clones too (every workdir it was given): its disk is not git's
    # history, but a plaintext there would be one `git push` away.
    repos += [head.parent for head in world.root.glob("*workdir*/*/HEAD")]
    assert len(repos) > len(world.remotes)
    found: list[str] = []
    for repo in repos:
        found += scan_repo(repo, needles)
    found += scan_text(output.text, needles)
    # Plain files the bridge keeps beside its clones (status.json, locks).
    for file in world.root.glob("*workdir*/*"):
        if file.is_file():
            found += [f"{file}: {f}" for f in scan_text(file.read_text(errors="replace"), needles)]
    assert found == []
    assert output.capture.lines  # the capture really saw the bridge's log


# --- (1) unchanged secrets: byte-identical, also after a restart on a fresh machine ----


def test_unchanged_secrets_stay_byte_identical_and_the_postgres_password_survives_a_restart(
    world: World, output: Output
) -> None:
    alpha = world.create("alpha", secrets_=ALPHA)
    world.create("beta", namespace="staging", secrets_=BETA)
    key = age_key_file(world.root, world.age_identity)
    report = world.cycle()
    assert report.exit_code() == 0, [o.error for o in report.outcomes]
    heads = {ns: world.head(ns) for ns in world.namespaces}
    trees = {ns: world.tree(ns) for ns in world.namespaces}
    assert set(secret_files(trees["agents"])) == {
        f"{NS}/alpha/secret-env.yaml",
        f"{NS}/alpha/secret-postgres.yaml",
    }
    env = sops_decrypt(world.read(f"{NS}/alpha/secret-env.yaml"), key)
    assert env == ALPHA
    pg = sops_decrypt(world.read(f"{NS}/alpha/secret-postgres.yaml"), key)
    assert pg is not None
    password = check_postgres(pg, "alpha-postgres")
    beta_pg = sops_decrypt(world.read(f"{STAGING}/beta/secret-postgres.yaml", "staging"), key)
    assert beta_pg is not None
    beta_password = check_postgres(beta_pg, "beta-postgres")
    assert beta_password != password

    # The connection string lives only in the encrypted Secret: the workloads reference it.
    for path, _blob in trees["agents"].items():
        if not Path(path).name.startswith("secret-"):
            assert b"postgres://" not in world.read(path), path
    server = yaml.safe_load_all(world.read(f"{NS}/alpha/agent-server.yaml"))
    env_vars = {
        e["name"]: e for e in next(iter(server))["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    for var in ("POSTGRES_URI", "DATABASE_URI"):
        assert env_vars[var]["valueFrom"]["secretKeyRef"] == {"name": "alpha-postgres", "key": var}

    # Several unchanged cycles: no commit, no push, not a byte different.
    for _ in range(2):
        report = world.cycle()
        assert {o.action for o in report.outcomes} == {"unchanged"}
        assert not any(t.pushed for t in report.targets)
    assert {ns: world.head(ns) for ns in world.namespaces} == heads

    # A fresh machine: the workdir is gone; the state and escrow are read back from git.
    shutil.rmtree(world.root / "workdir")
    report = world.cycle()
    assert report.exit_code() == 0
    assert {o.action for o in report.outcomes} == {"unchanged"}
    assert {ns: world.head(ns) for ns in world.namespaces} == heads
    assert {ns: world.tree(ns) for ns in world.namespaces} == trees

    # A change that needs a re-render after the restart keeps the password and the
    # ciphertext: the escrow is opened, not a new password generated.
    shutil.rmtree(world.root / "workdir")
    world.admin.patch_deployment(
        alpha["id"],
        {"source_revision_config": {"image_uri": "registry.example.com/acme/agent:2.0.0"}},
    )
    report = world.cycle()
    assert report.exit_code() == 0
    (commit,) = commits_since(world, "agents", heads["agents"])
    assert {Path(f).name for f in changed_files(world, "agents", commit[0])} == {
        "agent-server.yaml",
        "queue-worker.yaml",
        STATE_FILE,
    }
    after = world.tree("agents")
    assert secret_files(after) == secret_files(trees["agents"])
    pg_after = sops_decrypt(world.read(f"{NS}/alpha/secret-postgres.yaml"), key)
    assert pg_after is not None and check_postgres(pg_after, "alpha-postgres") == password

    assert_nothing_leaked(world, output, password, beta_password)

    # Control: the scan does see a value that reached the remote only as a dangling
    # object (a pushed branch, deleted again).
    clone = world.clone("agents")
    (clone / "oops.txt").write_text(f"token={ALPHA['OPENAI_API_KEY']}\n")
    git("checkout", "-q", "-b", "oops", cwd=clone)
    git("add", "-A", cwd=clone)
    git("commit", "-qm", "oops", cwd=clone)
    git("push", "-q", "origin", "oops", cwd=clone)
    git("push", "-q", "origin", "--delete", "oops", cwd=clone)
    shutil.rmtree(clone)
    assert git("branch", "--list", "oops", cwd=world.remotes["agents"]).strip() == ""
    assert scan_repo(world.remotes["agents"], [ALPHA["OPENAI_API_KEY"]]) != []


# --- (2) one value changed: only that deployment's env Secret is re-encrypted --------


def test_changing_one_secret_value_reencrypts_only_that_deployments_env_secret(
    world: World, output: Output
) -> None:
    alpha = world.create("alpha", secrets_=ALPHA)
    world.create("beta", secrets_=BETA)
    world.create("gamma", namespace="staging", secrets_=GAMMA)
    key = age_key_file(world.root, world.age_identity)
    assert world.cycle().exit_code() == 0
    heads = {ns: world.head(ns) for ns in world.namespaces}
    before = {ns: world.tree(ns) for ns in world.namespaces}

    changed = {**ALPHA, "OPENAI_API_KEY": "sk-alpha-rotated-" + "P0o9I8u7Y6t5" * 2}
    world.secret_values.append(changed["OPENAI_API_KEY"])
    world.admin.patch_deployment(
        alpha["id"], {"secrets": [{"name": k, "value": v} for k, v in changed.items()]}
    )
    report = world.cycle()
    assert report.exit_code() == 0, [o.error for o in report.outcomes]
    assert world.head("staging") == heads["staging"]
    (commit,) = commits_since(world, "agents", heads["agents"])
    parsed = parse(commit[1])
    assert parsed is not None and (parsed.kind, parsed.name) == ("deploy", "alpha")
    files = changed_files(world, "agents", commit[0])
    # The control plane makes a new revision for a secrets change, so the pod templates
    # change too (and roll, picking up the new value); no other Secret, nothing of beta.
    assert {f"{NS}/alpha/secret-env.yaml", f"{NS}/alpha/agent-server.yaml"} <= files
    assert files <= {
        f"{NS}/alpha/secret-env.yaml",
        f"{NS}/alpha/agent-server.yaml",
        f"{NS}/alpha/queue-worker.yaml",
        f"{NS}/alpha/{STATE_FILE}",
    }, files
    after = world.tree("agents")
    assert {p for p in after if after[p] != before["agents"].get(p)} == files
    assert secret_files(after) == {
        **secret_files(before["agents"]),
        f"{NS}/alpha/secret-env.yaml": after[f"{NS}/alpha/secret-env.yaml"],
    }
    assert sops_decrypt(world.read(f"{NS}/alpha/secret-env.yaml"), key) == changed
    pg = sops_decrypt(world.read(f"{NS}/alpha/secret-postgres.yaml"), key)
    assert pg is not None
    password = check_postgres(pg, "alpha-postgres")
    # And then it is stable again.
    report = world.cycle()
    assert {o.action for o in report.outcomes} == {"unchanged"}
    assert_nothing_leaked(world, output, password)


# --- (3) rotation: new recipients -> one rekey commit per deployment ----------------


def test_rotating_recipients_rekeys_every_secret_in_one_commit_per_deployment(
    world: World, output: Output
) -> None:
    world.create("alpha", secrets_=ALPHA)
    world.create("beta")  # no secrets[]: still the Postgres Secret
    world.create("gamma", namespace="staging", secrets_=GAMMA)
    old_key = age_key_file(world.root, world.age_identity)
    assert world.cycle().exit_code() == 0
    heads = {ns: world.head(ns) for ns in world.namespaces}
    before = {ns: world.tree(ns) for ns in world.namespaces}
    plain = {
        (ns, path): sops_decrypt(world.read(path, ns), old_key)
        for ns in world.namespaces
        for path in secret_files(before[ns])
    }
    assert len(plain) == 5 and all(v is not None for v in plain.values())
    passwords = [v["POSTGRES_PASSWORD"] for v in plain.values() if v and "POSTGRES_PASSWORD" in v]
    assert len(passwords) == 3

    fresh = new_identity()
    new_key = age_key_file(world.root, fresh)
    world.config_overrides["secrets.sops.ageRecipients"] = [str(fresh.to_public())]

    # rekey --dry-run: names every deployment, writes nothing anywhere.
    reflogs = {
        ns: git("reflog", "show", "--format=%H", "main", cwd=r) for ns, r in world.remotes.items()
    }
    dry = cli(world, output, "rekey", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert outcome_lines(dry.stdout) == {
        "agents/alpha": "would-change",
        "agents/beta": "would-change",
        "staging/gamma": "would-change",
    }, dry.stdout
    assert dry.stdout.count("would be re-sealed") == 5, dry.stdout
    assert {ns: world.head(ns) for ns in world.namespaces} == heads
    assert {
        ns: git("reflog", "show", "--format=%H", "main", cwd=r) for ns, r in world.remotes.items()
    } == reflogs

    # The next ordinary cycle sees the new recipients and re-encrypts everything.
    report = world.cycle()
    assert report.exit_code() == 0, [o.error for o in report.outcomes]
    assert {o.name: o.action for o in report.outcomes} == {
        "alpha": "rekeyed",
        "beta": "rekeyed",
        "gamma": "rekeyed",
    }
    expected = {"agents": ["alpha", "beta"], "staging": ["gamma"]}
    for ns, names in expected.items():
        commits = commits_since(world, ns, heads[ns])
        assert [c[1].split("\n", 1)[0] for c in commits] == [f"rekey({ns}/{n})" for n in names]
        tree = world.tree(ns)
        for (sha, message), name in zip(commits, names, strict=True):
            parsed = parse(message)
            assert parsed is not None and parsed.kind == "rekey"
            folder = f"test-cluster/{ns}/{name}"
            own_secrets = {p for p in secret_files(tree) if p.startswith(folder + "/")}
            # Every Secret of the deployment, its state file, nothing else.
            assert changed_files(world, ns, sha) == own_secrets | {f"{folder}/{STATE_FILE}"}
        for path, blob in secret_files(tree).items():
            assert blob != before[ns][path]
            assert sops_decrypt(world.read(path, ns), old_key) is None, path
            assert sops_decrypt(world.read(path, ns), new_key) == plain[(ns, path)], path
        # The old ciphertext stays in history (and opens with the old key).
        old_path = next(iter(secret_files(before[ns])))
        assert sops_decrypt(world.read(old_path, ns, ref=heads[ns]), old_key) is not None

    rotated = {ns: world.tree(ns) for ns in world.namespaces}
    assert {o.action for o in world.cycle().outcomes} == {"unchanged"}

    # `rekey` forces a re-encryption for the same recipients (e.g. after a suspected leak
    # of the ciphertext's data keys).
    heads = {ns: world.head(ns) for ns in world.namespaces}
    forced = cli(world, output, "rekey")
    assert forced.returncode == 0, forced.stderr
    assert outcome_lines(forced.stdout) == {
        "agents/alpha": "rekeyed",
        "agents/beta": "rekeyed",
        "staging/gamma": "rekeyed",
    }, forced.stdout
    for ns, names in expected.items():
        commits = commits_since(world, ns, heads[ns])
        assert [c[1].split("\n", 1)[0] for c in commits] == [f"rekey({ns}/{n})" for n in names]
        tree = world.tree(ns)
        for path, blob in secret_files(tree).items():
            assert blob != rotated[ns][path]
            assert sops_decrypt(world.read(path, ns), new_key) == plain[(ns, path)], path
        # Only the Secrets and the state files moved.
        moved = {p for p in tree if tree[p] != rotated[ns].get(p)}
        assert {Path(p).name for p in moved - set(secret_files(tree))} == {STATE_FILE}
    assert {o.action for o in world.cycle().outcomes} == {"unchanged"}
    assert_nothing_leaked(world, output, *passwords)


# --- (4) Sealed Secrets ---------------------------------------------------------------


def sealed_world(world: World, name: str) -> Controller:
    controller = Controller(world.root, name)
    world.config_overrides["secrets.provider"] = "sealed-secrets"
    world.config_overrides["secrets.sealedSecrets.certFile"] = str(controller.cert_file)
    return controller


def test_sealed_secrets_end_to_end_unseal_stability_and_certificate_rotation(
    world: World, output: Output
) -> None:
    controller = sealed_world(world, "controller")
    world.create("alpha", secrets_=ALPHA)
    report = world.cycle()
    assert report.exit_code() == 0, [o.error for o in report.outcomes]
    head = world.head()
    tree = world.tree()
    env_doc = yaml.safe_load(world.read(f"{NS}/alpha/secret-env.yaml"))
    pg_doc = yaml.safe_load(world.read(f"{NS}/alpha/secret-postgres.yaml"))
    for doc, name in ((env_doc, "alpha-env"), (pg_doc, "alpha-postgres")):
        assert (doc["apiVersion"], doc["kind"]) == ("bitnami.com/v1alpha1", "SealedSecret")
        assert (doc["metadata"]["namespace"], doc["metadata"]["name"]) == ("agents", name)
        # Strict scope (the default): no scope annotation, label "<namespace>/<name>".
        assert not any("-wide" in a for a in doc["metadata"].get("annotations", {}))
    assert controller.unseal(env_doc) == ALPHA
    password = check_postgres(controller.unseal(pg_doc), "alpha-postgres")

    # Stable: unchanged cycles and a fresh workdir change no byte.
    shutil.rmtree(world.root / "workdir")
    for _ in range(2):
        assert {o.action for o in world.cycle().outcomes} == {"unchanged"}
    assert world.head() == head and world.tree() == tree

    # A new controller certificate: one rekey commit, sealed for the new key only.
    new_controller = sealed_world(world, "controller-2")
    report = world.cycle()
    assert [o.action for o in report.outcomes] == ["rekeyed"]
    (commit,) = commits_since(world, "agents", head)
    assert commit[1].split("\n", 1)[0] == "rekey(agents/alpha)"
    env_doc = yaml.safe_load(world.read(f"{NS}/alpha/secret-env.yaml"))
    pg_doc = yaml.safe_load(world.read(f"{NS}/alpha/secret-postgres.yaml"))
    assert new_controller.unseal(env_doc) == ALPHA
    assert check_postgres(new_controller.unseal(pg_doc), "alpha-postgres") == password
    with pytest.raises(ValueError):
        controller.unseal(env_doc)
    assert_nothing_leaked(world, output, password)


def test_sealed_secrets_output_validates_against_the_bitnami_schema(
    world: World, output: Output
) -> None:
    schema_dir = default_schema_dir()
    if schema_dir is None or not (schema_dir / "bitnami.com").is_dir():
        pytest.skip("no ../shared/schemas/bitnami.com beside the checkout (set K8S_SCHEMA_DIR)")
    sealed_world(world, "controller")
    world.create("alpha", secrets_=ALPHA)
    assert world.cycle().exit_code() == 0
    for name in ("secret-env.yaml", "secret-postgres.yaml"):
        doc = yaml.safe_load(world.read(f"{NS}/alpha/{name}"))
        finding = validate_document(doc, schema_dir=schema_dir, strict=True)
        assert finding.unchecked is None and finding.errors == (), finding
    assert_nothing_leaked(world, output)


# --- (5) provider none ----------------------------------------------------------------


def test_provider_none_fails_closed_for_secrets_and_references_the_operator_secret(
    world: World, output: Output
) -> None:
    world.config_overrides["secrets.provider"] = "none"
    alpha = world.create("alpha", secrets_=ALPHA)
    world.create("beta")
    run = cli(world, output, "run", "--once")
    assert run.returncode == 1, run.stderr
    # The error names the deployment (name and id) and what to do.
    line = next(ln for ln in run.stderr.splitlines() if alpha["id"] in ln)
    assert "'alpha'" in line and "provider is none" in line and "sops or sealed-secrets" in line
    (subject,) = world.subjects()
    assert subject.startswith("deploy(agents/beta): ")
    tree = world.tree()
    assert not any(p.startswith(f"{NS}/alpha/") for p in tree)
    assert secret_files(tree) == {}

    def secret_refs(path: str) -> set[tuple[str, str]]:
        refs = set()
        for doc in yaml.safe_load_all(world.read(path)):
            pod = doc["spec"].get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref and env["name"].startswith(("POSTGRES", "DATABASE")):
                        refs.add((ref["name"], ref["key"]))
        return refs

    assert secret_refs(f"{NS}/beta/agent-server.yaml") == {
        ("beta-postgres", "POSTGRES_URI"),
        ("beta-postgres", "DATABASE_URI"),
    }
    assert secret_refs(f"{NS}/beta/postgres.yaml") == {("beta-postgres", "POSTGRES_PASSWORD")}
    state = DeploymentState.from_bytes(world.read(f"{NS}/beta/{STATE_FILE}"))
    assert dict(state.escrow) == {} and dict(state.secrets) == {}  # no password generated

    # A documented name of the operator's choosing.
    world.config_overrides["render.postgresSecretName"] = "{name}-pg-credentials"
    report = world.cycle()
    assert report.exit_code() == 1
    assert {o.name: o.action for o in report.outcomes} == {"alpha": "failed", "beta": "deployed"}
    assert secret_refs(f"{NS}/beta/agent-server.yaml") == {
        ("beta-pg-credentials", "POSTGRES_URI"),
        ("beta-pg-credentials", "DATABASE_URI"),
    }
    assert secret_refs(f"{NS}/beta/postgres.yaml") == {("beta-pg-credentials", "POSTGRES_PASSWORD")}
    assert_nothing_leaked(world, output)


# --- a provider failure names the deployment and carries no value ----------------------


def test_a_failing_sops_names_the_deployment_and_the_others_go_on(
    world: World, output: Output, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SOPS writer does not fail on our input; a stand-in that fails for
    # alpha's env Secret only, after every value went through the cipher, is
    # the worst case.
    from bridge.secrets.sops import SopsSealer, plan_error

    original = SopsSealer.seal

    def failing(self: SopsSealer, plan: Any) -> bytes:
        sealed = original(self, plan)
        if plan.name == "alpha-env":
            raise plan_error(plan, "the encrypted file did not read back; nothing is written")
        return sealed

    monkeypatch.setattr(SopsSealer, "seal", failing)
    alpha = world.create("alpha", secrets_=ALPHA)
    world.create("beta", secrets_=BETA)
    report = world.cycle()
    assert report.exit_code() == 1
    outcomes = {o.name: o for o in report.outcomes}
    assert outcomes["beta"].action == "deployed"
    failed = outcomes["alpha"]
    assert failed.action == "failed" and failed.error is not None
    assert failed.error.startswith(f"deployment 'alpha' ({alpha['id']}): "), failed.error
    assert "secret-env.yaml" in failed.error and "did not read back" in failed.error
    (subject,) = world.subjects()
    assert subject.startswith("deploy(agents/beta): ")
    assert not any(p.startswith(f"{NS}/alpha/") for p in world.tree())
    assert scan_text(failed.error, world.secret_values) == []
    assert_nothing_leaked(world, output)
