"""Decrypting SOPS files in tests the way Flux's kustomize-controller does.

The bridge writes SOPS files itself (bridge/secrets/sops.py), so the tests hold
it to the real `sops` binary: every identity a test makes comes from
`new_identity()`, and `recording()` (on for the whole session in
tests/conftest.py) keeps every file `SopsSealer.seal` returns; at the end of
the session each one is decrypted with `sops --decrypt` (which checks the MAC)
and must give back exactly the Secret it was made from.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyrage

from bridge.secrets import sops
from bridge.secrets.sops import sops_binary_path

_IDENTITIES: dict[str, str] = {}  # recipient -> identity, every one a test made
_SEALED: list[tuple[bytes, dict[str, Any], tuple[str, ...]]] = []
LIMIT = 5000  # files kept for the end-of-session check


def new_identity() -> Any:
    """A fresh age identity, known to the end-of-session decryption check."""
    identity = pyrage.x25519.Identity.generate()
    _IDENTITIES[str(identity.to_public())] = str(identity)
    return identity


def sops_decrypt_raw(
    data: bytes, key_file: Path | None = None, *, keys: str | None = None, output: str = "yaml"
) -> subprocess.CompletedProcess[bytes]:
    """`sops --decrypt` of YAML bytes with an age identity file (or identities
    given as text), isolated from any config. `output="json"` for an exact
    comparison: sops's YAML writer spells some strings (U+2028 in a literal
    block) in ways PyYAML reads back differently."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "config.yaml")
        config.write_text("stores:\n  yaml:\n    indent: 2\n", encoding="utf-8")
        env = {"HOME": tmp}
        if key_file is not None:
            env["SOPS_AGE_KEY_FILE"] = str(key_file)
        if keys is not None:
            env["SOPS_AGE_KEY"] = keys
        return subprocess.run(
            [
                str(sops_binary_path()),
                "--disable-version-check",
                "--config",
                str(config),
                "--decrypt",
                "--input-type",
                "yaml",
                "--output-type",
                output,
                "/dev/stdin",
            ],
            input=data,
            capture_output=True,
            cwd=tmp,
            env=env,
            check=False,
            timeout=60,
        )


@contextmanager
def recording() -> Iterator[None]:
    """Keep every file SopsSealer.seal returns, with the Secret it encrypts."""
    original = sops.SopsSealer.seal

    def seal(self: sops.SopsSealer, plan: Any) -> bytes:
        output = original(self, plan)
        if len(_SEALED) < LIMIT:
            _SEALED.append((output, plan.manifest(), self.recipients))
        return output

    sops.SopsSealer.seal = seal  # type: ignore[method-assign]
    try:
        yield
    finally:
        sops.SopsSealer.seal = original  # type: ignore[method-assign]


def check_recorded() -> tuple[int, list[str]]:
    """(files checked, problems): each recorded file through the real `sops --decrypt`."""
    todo = [
        (i, output, manifest, [_IDENTITIES[r] for r in recipients if r in _IDENTITIES])
        for i, (output, manifest, recipients) in enumerate(_SEALED)
    ]
    todo = [item for item in todo if item[3]]

    def check(item: tuple[int, bytes, dict[str, Any], list[str]]) -> str | None:
        index, output, manifest, identities = item
        proc = sops_decrypt_raw(output, keys="\n".join(identities), output="json")
        if proc.returncode != 0:
            return f"file {index} ({manifest['metadata']['name']}): {proc.stderr.decode()[:300]}"
        if json.loads(proc.stdout) != manifest:
            return f"file {index} ({manifest['metadata']['name']}): decrypts to other data"
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for p in pool.map(check, todo) if p is not None]
    _SEALED.clear()
    return len(todo), problems
