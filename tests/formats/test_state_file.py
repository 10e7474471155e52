"""The state file is read as anyone may have pushed it (issue #20): bounded in
size and depth, every field of its type and shape, file names one safe path
component; anything else is an UntrustedInput naming the field, never a crash."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from bridge.formats.state import MAX_STATE_BYTES, DeploymentState, SecretRecord
from bridge.untrusted import UntrustedInput

pytestmark = pytest.mark.quick

STATE = DeploymentState(
    deployment_id="7d1c2a4e-0000-4000-8000-000000000001",
    deployment_name="support-agent",
    namespace="agents",
    cluster="prod-eu-1",
    listener_id="6f9619ff-8b86-d011-b42d-00c04fc964ff",
    revision_id="7d1c2a4e-0000-4000-8000-0000000000aa",
    image="registry.example.com/acme/agent:1.2.3",
    input_digest="hmac-sha256:" + "a" * 64,
    bridge_version="0.1.0",
    files={"kustomization.yaml": "1" * 40, "secret-env.yaml": "2" * 40},
    secrets={"secret-env.yaml": SecretRecord("hmac-sha256:" + "b" * 64, "sops-age:0123abcd")},
    escrow={"postgres-password": "v1.abc-_DEF"},
)


def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(STATE.to_bytes())
    return loaded


def test_what_the_bridge_writes_reads_back_the_same() -> None:
    assert DeploymentState.from_bytes(STATE.to_bytes()) == STATE
    minimal = doc()
    minimal["deployment"].update(revisionId=None, image=None, namespace="")
    for key in ("files", "secrets", "escrow"):
        del minimal[key]
    parsed = DeploymentState.from_bytes(json.dumps(minimal).encode())
    assert parsed.revision_id is None and parsed.files == {} and parsed.namespace == ""
    # A key a later version may add is ignored, however it nests (nothing walks it).
    later = edited(lambda d: d.update(addedLater=[[[[[[[[[[[[1]]]]]]]]]]]]))
    assert DeploymentState.from_bytes(later) == STATE


def edited(change: Any) -> bytes:
    state = doc()
    change(state)
    return json.dumps(state).encode()


BAD = [
    ("nested", b"[" * 5000 + b"]" * 5000, "nested"),
    ("deep-in-a-field", edited(lambda d: d["deployment"].update(image=[[[[[[1]]]]]])), "image"),
    ("oversized", b" " * (MAX_STATE_BYTES + 1), "at most"),
    ("not-json", b"{", "not valid JSON"),
    ("schema", edited(lambda d: d.update(schema=2)), "unknown schema"),
    (
        "file-map-escapes",
        edited(lambda d: d["files"].update({"../x.yaml": "1" * 40})),
        "'../x.yaml'",
    ),
    ("file-map-dotgit", edited(lambda d: d["files"].update({".git": "1" * 40})), "'.git'"),
    ("file-map-slash", edited(lambda d: d["files"].update({"a/b": "1" * 40})), "'a/b'"),
    ("file-map-newline", edited(lambda d: d["files"].update({"a\nb": "1" * 40})), "'a\\nb'"),
    ("blob-id", edited(lambda d: d["files"].update({"a.yaml": "HEAD"})), "files.a.yaml"),
    ("files-list", edited(lambda d: d.update(files=["a"])), "'files'"),
    ("id-newline", edited(lambda d: d["deployment"].update(id="x\nDeployment-Id: y")), "id"),
    ("id-type", edited(lambda d: d["deployment"].update(id=7)), "'deployment.id' is int"),
    ("revision", edited(lambda d: d["deployment"].update(revisionId="a b")), "revisionId"),
    ("name", edited(lambda d: d["deployment"].update(name="../x")), "deployment.name"),
    ("deployment", edited(lambda d: d.update(deployment="x")), "'deployment'"),
    ("digest", edited(lambda d: d.update(inputDigest="\x1b[31m")), "inputDigest"),
    ("secret-record", edited(lambda d: d["secrets"].update({"s.yaml": "x"})), "secrets.s.yaml"),
    ("escrow", edited(lambda d: d["escrow"].update({"p": "a\nb"})), "escrow.p"),
    ("cluster", edited(lambda d: d.pop("cluster")), "'cluster' is missing"),
]


@pytest.mark.parametrize(("data", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_state_file_not_as_the_bridge_writes_it_is_refused_by_field(
    data: bytes, says: str
) -> None:
    with pytest.raises(UntrustedInput) as caught:
        DeploymentState.from_bytes(data)
    text = str(caught.value)
    assert says in text, text
    assert "\n" not in text and "\x1b" not in text


def test_what_a_state_derives_is_made_once_and_left_out_of_its_identity() -> None:
    """folder_files and sealings are worked out when the state is made (the state
    is kept across cycles and asked every cycle), never part of its repr, which
    nothing should depend on, or of equality."""
    parsed = DeploymentState.from_bytes(STATE.to_bytes())
    assert parsed.folder_files == {"kustomization.yaml": "1" * 40, "secret-env.yaml": "2" * 40}
    assert parsed.sealings == {"sops-age:0123abcd"}
    assert "folder_files" not in repr(parsed) and "sealings" not in repr(parsed)
    with pytest.raises(TypeError):
        parsed.folder_files["x"] = "3" * 40  # type: ignore[index]
    # A file may not list the state file itself (not a safe name), but a state
    # made in code that does: the folder's other entries still leave it out.
    with pytest.raises(UntrustedInput, match="safe file name"):
        DeploymentState.from_bytes(
            edited(lambda d: d["files"].update({".gitops-bridge.state": "4" * 40}))
        )
    odd = dataclasses.replace(parsed, files={**parsed.files, ".gitops-bridge.state": "4" * 40})
    assert odd.folder_files == parsed.folder_files
    assert odd != parsed
    # The same few file names in every state: one string each, shared.
    again = DeploymentState.from_bytes(STATE.to_bytes())
    assert [id(n) for n in again.files] == [id(n) for n in parsed.files]
    assert again.sealings is parsed.sealings  # one set for every state sealed alike
