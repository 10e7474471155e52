"""Hostile git remotes (issue #20): credentials go to the configured remote only.

A target's smart-HTTP remote that answers 302 to another host:port must not
send the git password there (git follows one redirect by default and asks the
askpass helper for the new host); a repo URL with a password in it is refused
at load for every scheme, without showing it. Real processes: the `run` loop,
a redirecting server and a second server that records what it receives.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.gitservers import recording_server, redirecting_server
from tests.hostile.loop import assert_survived, two_targets

PASSWORD = "git-Pa55-" + secrets.token_hex(8)
CREDENTIALS = {"GIT_USER": "bot", "GIT_TOKEN": PASSWORD}


def https_targets(agents_url: str, staging: Path) -> list[dict[str, object]]:
    return [
        {
            "namespace": "agents",
            "repo": agents_url,
            "branch": "main",
            "https": {"usernameEnv": "GIT_USER", "passwordEnv": "GIT_TOKEN"},
        },
        {"namespace": "staging", "repo": staging.as_uri(), "branch": "main"},
    ]


def test_a_redirect_to_another_host_gets_no_password(tmp_path: Path) -> None:
    with (
        two_targets(tmp_path) as env,
        recording_server() as elsewhere,
        redirecting_server(elsewhere.url) as remote,
    ):
        before = {ns: env.folders(ns) for ns in env.remotes}
        targets = https_targets(remote + "agents.git", env.remotes["staging"])
        loop = env.start(env=CREDENTIALS, targets=targets)
        loop.wait(lambda: "redirect (HTTP 302)" in loop.log(), "the redirect to be reported")
        assert_survived(
            env,
            loop,
            other="staging",
            before=before,
            named=["target agents", "redirect (HTTP 302)", "does not follow"],
            needles=[PASSWORD],
        )
        assert elsewhere.requests == [], elsewhere.requests  # not followed at all
        assert not elsewhere.received(PASSWORD)
        # `run --once` says the same with the documented exit code of a git failure.
        once = env.scenario.run(env=CREDENTIALS)
        assert once.returncode == 4, once.stderr[-3000:]
        assert "redirect (HTTP 302)" in once.stderr and "Traceback" not in once.stderr
        assert PASSWORD not in once.stdout + once.stderr
        assert not elsewhere.received(PASSWORD)


def test_a_git_config_rewriting_the_host_gets_no_password(tmp_path: Path) -> None:
    """The askpass helper answers only prompts naming the configured scheme, host
    and port: here a `url.*.insteadOf` in the bridge user's git config sends git
    to another server, which asks for credentials."""
    with two_targets(tmp_path) as env, recording_server() as elsewhere:
        configured = "http://127.0.0.1:9/agents.git"  # never reached: rewritten
        home = tmp_path / "home"
        home.mkdir()
        (home / ".gitconfig").write_text(
            f'[url "{elsewhere.url}"]\n\tinsteadOf = http://127.0.0.1:9/\n'
        )
        before = {ns: env.folders(ns) for ns in env.remotes}
        targets = https_targets(configured, env.remotes["staging"])
        loop = env.start(env={**CREDENTIALS, "HOME": str(home)}, targets=targets)
        loop.wait(lambda: bool(elsewhere.requests), "git to reach the other server")
        assert_survived(
            env,
            loop,
            other="staging",
            before=before,
            named=["target agents", "another remote than http://127.0.0.1:9/agents.git"],
            needles=[PASSWORD],
        )
        assert not elsewhere.received(PASSWORD)
        assert not any("Authorization" in h for _m, _p, h in elsewhere.requests)


def test_a_password_in_a_repo_url_is_refused_for_every_scheme(tmp_path: Path) -> None:
    with two_targets(tmp_path, deploy=False) as env:
        staging = env.remotes["staging"]
        for repo in (
            f"file://bridge:{PASSWORD}@{env.remotes['agents']}",
            f"ssh://git:{PASSWORD}@127.0.0.1:9/agents.git",
            f"https://bot:{PASSWORD}@127.0.0.1:9/agents.git",
        ):
            env.scenario.write_config(
                targets=[
                    {"namespace": "agents", "repo": repo, "branch": "main"},
                    {"namespace": "staging", "repo": staging.as_uri(), "branch": "main"},
                ]
            )
            done = env.scenario.run()
            assert done.returncode == 2, (repo, done.stderr[-2000:])
            assert "targets[0].repo" in done.stderr and "password in the URL" in done.stderr
            assert PASSWORD not in done.stdout + done.stderr
            assert "Traceback" not in done.stderr
            written = [p for p in env.scenario.workdir.rglob("*") if p.is_file()]
            assert not any(PASSWORD.encode() in p.read_bytes() for p in written), repo
