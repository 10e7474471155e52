"""Decrypting SOPS files in tests the way Flux's kustomize-controller does."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from bridge.secrets.sops import sops_binary_path


def sops_decrypt_raw(data: bytes, key_file: Path) -> subprocess.CompletedProcess[bytes]:
    """`sops --decrypt` of YAML bytes with one age identity file, isolated from any config."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "config.yaml")
        config.write_text("stores:\n  yaml:\n    indent: 2\n", encoding="utf-8")
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
                "yaml",
                "/dev/stdin",
            ],
            input=data,
            capture_output=True,
            cwd=tmp,
            env={"HOME": tmp, "SOPS_AGE_KEY_FILE": str(key_file)},
            check=False,
            timeout=60,
        )
