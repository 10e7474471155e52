"""Kustomize's Go library (pykustomize, in the validation workers) against `kubectl kustomize`.

Agreement: for real rendered roots (every secrets provider, every golden case,
and roots that break the schema, the build, or the root's boundary) the
library's objects equal kubectl's parsed output and `check_roots` answers the
same with either engine. Fallbacks: a stand-in `pykustomize` package that
cannot load, kills its worker or hangs sends validation to kubectl with one
warning, for good. The bridge (pytest) process never imports pykustomize.

Real kubectl, real spawned worker processes, real schemas, real sops and
Sealed Secrets sealing; the only stand-in is the fake package of the fallback
tests (a real Go runtime cannot be told to die or hang on cue).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import ConfigError
from bridge.formats.state import STATE_FILE
from bridge.models import parse_deployment
from bridge.redaction import Redacted
from bridge.rendering.naming import folder_name
from bridge.rendering.rendering import render_deployment
from bridge.secrets.sealed import SealedSecretsSealer
from bridge.secrets.sops import SopsSealer
from bridge.validation import libkustomize
from bridge.validation import roots as validation
from bridge.validation.folders import default_schema_dir
from bridge.validation.kustomize import kustomize_build
from bridge.validation.objects import RootCheck
from bridge.validation.roots import check_roots
from tests.rendering.support import CASES, load_case, render_case, write_plain
from tests.rendering.test_validation_parallel import write_roots
from tests.rendering.test_validator_scratch import settings
from tests.secrets.test_sealed import Controller
from tests.secrets.test_sops import AgeKey

HAVE_LIBRARY = importlib.util.find_spec("pykustomize") is not None
needs_library = pytest.mark.skipif(
    not HAVE_LIBRARY,
    reason="pykustomize is not installed (scripts/setup installs it on linux/amd64)",
)
needs_cffi = pytest.mark.skipif(
    importlib.util.find_spec("cffi") is None, reason="cffi is not installed"
)
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "case.json").is_file())
LOGGER = "bridge.validation"


def _reset() -> None:
    validation.shutdown_workers()
    validation._LIBRARY_OFF = False
    validation._LIBRARY_LOGGED = False
    validation._POOL_BROKEN = False
    validation._VALID.clear()


@pytest.fixture(autouse=True)
def clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No workers, no memo, the library not given up; one worker even on one core."""
    _reset()
    monkeypatch.setenv("BRIDGE_VALIDATE_WORKERS", "1")
    monkeypatch.delenv(libkustomize.ENGINE_ENV, raising=False)
    yield
    _reset()


# --- the roots --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Corpus:
    base: Path
    good: list[str]  # build and validate
    schema_bad: str  # builds; one object breaks its schema
    missing: str  # lists a resource file that does not exist
    malformed: str  # a resource file that is not YAML
    hostile: str  # lists a file outside the root
    kubectl: dict[str, RootCheck]  # check_roots with BRIDGE_KUSTOMIZE=kubectl

    @property
    def bad(self) -> list[str]:
        return [self.schema_bad, self.missing, self.malformed, self.hostile]

    @property
    def all(self) -> list[str]:
        return sorted(self.good + self.bad)


def _write_root(folder: Path, files: dict[str, bytes], dep_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / STATE_FILE).write_text(json.dumps({"deployment": {"id": dep_id}}))


def _sealed_root(base: Path, provider: str, sealer: Any) -> str:
    """The secrets case as the reconciler writes it for `provider`: Secrets sealed."""
    dep, ctx, _doc = load_case("secrets-and-references")
    ctx = dataclasses.replace(ctx, secrets_provider=provider)
    name = folder_name(dep.name, dep.id)
    rendered = render_deployment(dep, ctx, name=name, postgres_password=Redacted("p" * 40))
    assert rendered.secrets, "the case must carry Secrets to seal"
    files = dict(rendered.files)
    for plan in rendered.secrets:
        files[plan.file] = sealer.seal(plan)
    rel = f"{provider}/{dep.namespace}/{name}"
    _write_root(base / rel, files, dep.id)
    return rel


def _corpus(base: Path) -> Corpus:
    # Provider none: generated deployments (write_roots), and one with no password.
    generated = write_roots(base, 10)
    dep, rendered, name = render_case("minimal", password=None)
    assert rendered.secrets == ()
    none_rel = f"none/{dep.namespace}/{name}"
    _write_root(base / none_rel, dict(rendered.files), dep.id)
    # Every golden case, Secrets in plaintext (as the golden test builds them).
    cases = []
    for case in CASE_NAMES:
        dep, rendered, name = render_case(case)
        rel = f"{case}/{dep.namespace}/{name}"  # cases share names (and ids)
        write_plain(rendered, base / rel)
        (base / rel / STATE_FILE).write_text(json.dumps({"deployment": {"id": dep.id}}))
        cases.append(rel)
    # The two providers that seal: real sops + age, real Sealed Secrets hybrid encryption.
    keys = base.parent / "keys"
    keys.mkdir()
    sops_rel = _sealed_root(base, "sops", SopsSealer([AgeKey(keys, "flux").recipient]))
    controller = Controller(keys, "controller")
    sealed_rel = _sealed_root(
        base, "sealed-secrets", SealedSecretsSealer.from_cert_file(controller.cert_file)
    )

    schema_bad, missing, malformed, hostile = generated[6:]
    path = base / schema_bad / "queue-worker.yaml"
    path.write_text(path.read_text().replace("spec:\n", "spec:\n  bogusField: 1\n", 1))
    (base / missing / "kustomization.yaml").write_text(
        "resources:\n- agent-server.yaml\n- missing.yaml\n"
    )
    (base / malformed / "agent-server.yaml").write_text("kind: [unclosed\nmetadata: {name: x\n")
    # ../../outside.yaml from c/agents/<name> is c/outside.yaml: a valid object,
    # so that the only thing wrong is where it lies.
    (base / "c" / "outside.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: outside\n  namespace: agents\n"
    )
    (base / hostile / "kustomization.yaml").write_text(
        "resources:\n- agent-server.yaml\n- ../../outside.yaml\n"
    )
    good = [*generated[:6], none_rel, *cases, sops_rel, sealed_rel]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRIDGE_VALIDATE_WORKERS", "1")
        mp.setenv(libkustomize.ENGINE_ENV, "kubectl")
        _reset()
        try:
            assert validation.kustomize_engine() == "kubectl"
            kubectl = check_roots(base, good + generated[6:], schema_dir=default_schema_dir())
        finally:
            _reset()
    return Corpus(base, good, schema_bad, missing, malformed, hostile, kubectl)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return _corpus(tmp_path_factory.mktemp("libkustomize") / "roots")


def test_the_corpus_is_what_it_claims(corpus: Corpus) -> None:
    """Checked once, with kubectl: the good roots are good, each bad one bad its way."""
    found = corpus.kubectl
    assert sorted(found) == corpus.all
    assert {f: found[f].problems for f in corpus.good} == {f: [] for f in corpus.good}
    assert all(found[f].objects >= 7 for f in corpus.good)
    assert found[corpus.schema_bad].build_error is None
    assert any("bogusField" in e for e in found[corpus.schema_bad].errors)
    for folder in (corpus.missing, corpus.malformed, corpus.hostile):
        error = found[folder].build_error
        assert error is not None and error.startswith("error: "), (folder, error)
    assert "missing.yaml" in str(found[corpus.missing].build_error)
    assert "MalformedYAMLError" in str(found[corpus.malformed].build_error)
    assert "is not in or below" in str(found[corpus.hostile].build_error)  # RootOnly
    # The sealed roots hold what each provider writes to git.
    sealed = {
        provider: kustomize_build(corpus.base / f)
        for f in corpus.good
        for provider in ("sops", "sealed-secrets")
        if f.startswith(provider + "/")
    }
    assert any(doc.get("sops") and doc["kind"] == "Secret" for doc in sealed["sops"])
    assert any(doc["kind"] == "SealedSecret" for doc in sealed["sealed-secrets"])


# --- agreement with the real library ----------------------------------------------


def _library_build(root: Path) -> list[dict[str, Any]] | str:
    """libkustomize.build in a spawned worker: the objects, or BuildFailed's text."""
    pool = validation._pool()
    assert pool is not None
    try:
        return pool.submit(libkustomize.build, root).result(timeout=120)
    except libkustomize.BuildFailed as e:
        return str(e)


def _kubectl_build(root: Path) -> list[dict[str, Any]] | str:
    try:
        return kustomize_build(root)
    except validation.BuildError as e:
        return str(e)


@needs_library
def test_the_pinned_version_is_the_installed_one() -> None:
    assert libkustomize.PINNED_VERSION == importlib.metadata.version("pykustomize")


@needs_library
def test_library_objects_equal_kubectl_output(corpus: Corpus) -> None:
    roots = [corpus.base / f for f in corpus.all]
    with ThreadPoolExecutor(max_workers=4) as threads:
        want = list(threads.map(_kubectl_build, roots))
    got = [_library_build(root) for root in roots]
    for folder, mine, theirs in zip(corpus.all, got, want, strict=True):
        assert mine == theirs, folder
    errors = {f: g for f, g in zip(corpus.all, got, strict=True) if isinstance(g, str)}
    assert sorted(errors) == sorted([corpus.missing, corpus.malformed, corpus.hostile])
    assert all(e.startswith("error: ") for e in errors.values())
    assert "pykustomize" not in sys.modules


@needs_library
def test_check_roots_answers_the_same_with_either_engine(
    corpus: Corpus, caplog: pytest.LogCaptureFixture
) -> None:
    assert validation.kustomize_engine() == "library"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        found = check_roots(corpus.base, corpus.all, schema_dir=default_schema_dir())
    assert found == corpus.kubectl
    assert not validation._LIBRARY_OFF  # no fallback: the library built every root
    assert validation._LIBRARY_LOGGED
    infos = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(infos) == 1 and f"pykustomize {libkustomize.PINNED_VERSION}" in infos[0]
    assert all(r.levelno < logging.WARNING for r in caplog.records)
    # The Go runtime stayed in the worker.
    assert "pykustomize" not in sys.modules


@needs_library
def test_the_bridge_process_never_imports_pykustomize(tmp_path: Path) -> None:
    folders = write_roots(tmp_path, 3)
    assert validation.kustomize_engine() == "library"
    result = check_roots(tmp_path, folders)
    assert {f: r.problems for f, r in result.items()} == {f: [] for f in folders}
    assert not validation._LIBRARY_OFF
    assert "pykustomize" not in sys.modules
    assert "pykustomize._ffi" not in sys.modules


# --- fallbacks, with a stand-in package -------------------------------------------

FAKE_MODE = "FAKE_PYKUSTOMIZE_MODE"
FAKE_LOG = "FAKE_PYKUSTOMIZE_LOG"

FAKE_INIT = '"""A stand-in for pykustomize (tests/rendering/test_libkustomize.py)."""\n'
FAKE_FFI = textwrap.dedent(
    '''
    """The stand-in's bindings: a real cffi FFI, a library that fails on cue."""

    import os
    import time

    import cffi

    ffi = cffi.FFI()
    MODE = os.environ.get("FAKE_PYKUSTOMIZE_MODE", "")


    def _note(event):
        log = os.environ.get("FAKE_PYKUSTOMIZE_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {event}\\n")


    _note("import")


    class KustomizeLibraryNotFound(Exception):
        pass


    class _Library:
        def pykustomize_build_to_json(self, path, options, result):
            _note("build")
            if MODE == "die":
                os._exit(1)
            if MODE == "hang":
                time.sleep(60)
            return 1

        def pykustomize_last_error(self):
            return ffi.NULL

        def pykustomize_free(self, pointer):
            pass


    def get_library():
        if MODE == "unavailable":
            raise KustomizeLibraryNotFound("fake: no shared library for this platform")
        return _Library()


    def get_version():
        return "fake"
    '''
)


@pytest.fixture
def fake_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in package first on sys.path (spawned workers get the parent's);
    returns the file where each process that imports it notes its pid."""
    package = tmp_path / "fake" / "pykustomize"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_INIT)
    (package / "_ffi.py").write_text(FAKE_FFI)
    log = tmp_path / "fake.log"
    monkeypatch.setenv(FAKE_LOG, str(log))
    monkeypatch.syspath_prepend(str(package.parent))
    importlib.invalidate_caches()
    spec = importlib.util.find_spec("pykustomize")
    assert spec is not None and spec.origin == str(package / "__init__.py")
    return log


def _notes(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    return [
        (int(pid), event)
        for pid, event in (line.split() for line in log.read_text().split("\n") if line)
    ]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING
    ]


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


FEW = 5  # roots per fallback check: three good, the schema-bad one, the missing-file one


@needs_cffi
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("mode", "named"),
    [
        ("unavailable", "KustomizeLibraryNotFound: fake: no shared library"),
        ("die", "terminated abruptly"),
        ("hang", "a build ran over 10 s"),
    ],
)
def test_a_failing_library_falls_back_to_kubectl_once(
    mode: str,
    named: str,
    corpus: Corpus,
    fake_library: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(FAKE_MODE, mode)
    if mode == "hang":
        # Counted from submission, so it covers the worker's spawn and imports
        # too: 2 s was once not enough on a busy machine (no worker had even
        # imported the stand-in when the timeout struck).
        monkeypatch.setattr(validation, "BUILD_TIMEOUT", 10)
    folders = [*corpus.good[:3], corpus.schema_bad, corpus.missing]
    want = {f: corpus.kubectl[f] for f in folders}
    assert validation.kustomize_engine() == "library"

    with caplog.at_level(logging.INFO, logger=LOGGER):
        first = check_roots(corpus.base, folders, schema_dir=default_schema_dir())
    assert first == want
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert named in warnings[0] and "kubectl kustomize from now on" in warnings[0]
    assert validation._LIBRARY_OFF
    assert validation.kustomize_engine() == "kubectl"

    # The stand-in was imported in a worker (it got this process's sys.path), never here.
    notes = _notes(fake_library)
    workers = {pid for pid, _event in notes}
    assert workers and os.getpid() not in workers
    assert "pykustomize" not in sys.modules
    if mode in ("die", "hang"):
        builders = [pid for pid, event in notes if event == "build"]
        assert len(builders) == 1
        assert _gone(builders[0])  # killed and reaped, not left sleeping in "Go"

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        second = check_roots(corpus.base, folders, schema_dir=default_schema_dir())
    assert second == want
    assert _warnings(caplog) == []
    assert _notes(fake_library) == notes  # the library was not tried again


# --- choosing the engine ------------------------------------------------------------


@needs_cffi
def test_kubectl_engine_never_tries_the_library(
    tmp_path: Path,
    fake_library: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(FAKE_MODE, "die")  # would end the worker, were it ever loaded
    monkeypatch.setenv(libkustomize.ENGINE_ENV, "kubectl")
    assert not libkustomize.wanted()
    assert validation.kustomize_engine() == "kubectl"
    folders = write_roots(tmp_path / "roots", 3)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = check_roots(tmp_path / "roots", folders)
    assert {f: r.problems for f, r in result.items()} == {f: [] for f in folders}
    assert not fake_library.exists()  # no process imported the package
    assert caplog.records == []
    assert not validation._LIBRARY_OFF and not validation._LIBRARY_LOGGED


@pytest.mark.parametrize("value", ["kubectl", " KUBECTL "])
def test_kubectl_is_accepted_in_any_case(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(libkustomize.ENGINE_ENV, value)
    assert not libkustomize.wanted()
    assert validation.kustomize_engine() == "kubectl"


def test_auto_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in (None, "", "auto", "AUTO"):
        if value is None:
            monkeypatch.delenv(libkustomize.ENGINE_ENV, raising=False)
        else:
            monkeypatch.setenv(libkustomize.ENGINE_ENV, value)
        assert libkustomize.wanted() is HAVE_LIBRARY


def test_a_bogus_engine_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.validation.scratch import Validator

    monkeypatch.setenv(libkustomize.ENGINE_ENV, "bogus")
    with pytest.raises(ConfigError, match="BRIDGE_KUSTOMIZE='bogus'"):
        libkustomize.wanted()
    with pytest.raises(ConfigError, match="expected auto or kubectl"):
        Validator(settings())


# --- disagreements the tests found between the engines, mended in validation.py ---


@needs_library
def test_a_multi_line_build_error_reads_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders = write_roots(tmp_path, 1)
    kustomization = tmp_path / folders[0] / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text() + "helmCharts:\n- name: x\n  repo: https://example.invalid\n"
    )
    library = check_roots(tmp_path, folders)[folders[0]]
    assert validation.kustomize_engine() == "library" and not validation._LIBRARY_OFF
    monkeypatch.setenv(libkustomize.ENGINE_ENV, "kubectl")
    kubectl = check_roots(tmp_path, folders)[folders[0]]
    # Three lines: "error: trouble configuring builtin HelmChartInflationGenerator
    # with config: `\nname: x\n...`: must specify --enable-helm"; kubectl's path used
    # to keep only the last of them.
    assert library.build_error is not None and kubectl.build_error is not None
    assert library.build_error == kubectl.build_error


def test_an_equals_sign_value_validates_with_kubectl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dep, ctx, doc = load_case("hostile-strings")
    doc["deployment"]["source_config"]["resource_spec"]["annotations"]["example.com/eq"] = "="
    dep = parse_deployment(doc["deployment"])
    name = folder_name(dep.name, dep.id)
    _write_root(tmp_path / name, dict(render_deployment(dep, ctx, name=name).files), dep.id)
    monkeypatch.setenv(libkustomize.ENGINE_ENV, "kubectl")
    result = check_roots(tmp_path, [name])[name]
    assert result.problems == [] and result.objects >= 7
