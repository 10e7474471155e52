"""GitHub App credentials: a real RS256 JWT, verified by the test forge with the
App's public key, traded for an installation token that is cached, refreshed
before its hour ends, refreshed once after a 401, and used for git too."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.errors import ConfigError
from bridge.forges import ForgeRefused, GitHubAppToken, token_source
from bridge.forges.auth import REFRESH_MARGIN
from bridge.redaction import Redacted
from tests.forges.conftest import Site
from tests.forges.test_lifecycle import BASE, HEAD, new_pull
from tests.gitservers import git
from tests.leakscan import scan_text


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_file(tmp_path: Path, key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "app.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def app_site(make_site, app_key):  # type: ignore[no-untyped-def]
    site: Site = make_site("github")
    site.state.tokens.clear()  # only installation tokens are accepted
    site.state.add_app("12345", "678", app_key.public_key())
    return site


def test_installation_token_is_traded_cached_and_refreshed(
    make_site,
    app_key,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    site = app_site(make_site, app_key)
    secrets: list[Redacted] = []
    tokens = token_source(
        "github",
        app_id="12345",
        installation_id="678",
        private_key_file=key_file(tmp_path, app_key),
        clock=site.clock,
        on_secret=secrets.append,
    )
    assert isinstance(tokens, GitHubAppToken)
    forge = site.client(tokens=tokens)
    forge.open_pull(new_pull())
    forge.find_pull(HEAD, BASE)
    app = site.state.apps[0]
    assert len(app.minted) == 1  # one trade serves many requests
    trade = site.state.requests("POST", r"/access_tokens$")[0]
    assert trade.headers["authorization"].startswith("Bearer ey")  # the JWT, not a token

    user, token = forge.git_credentials()
    assert user == "x-access-token" and token.reveal() == app.minted[0][0]
    # git over HTTPS takes the same token (the fake serves git with it).
    out = git(
        "ls-remote", site.repo_url.replace("http://", f"http://{user}:{token.reveal()}@"), "main"
    )
    assert out.strip()

    # Shortly before the hour ends, the next request trades for a new token first.
    site.clock.advance(3600 - REFRESH_MARGIN + 1)
    forge.get_pull(1)
    assert len(app.minted) == 2 and forge.git_credentials()[1].reveal() == app.minted[1][0]
    assert site.state.exchanges[-1].headers["authorization"] == f"Bearer {app.minted[1][0]}"

    # Every secret went to the scrubber, and none reached a log line.
    assert {s.reveal() for s in secrets} >= {app.minted[0][0], app.minted[1][0]}
    assert scan_text(caplog.text, [s.reveal() for s in secrets]) == []


def test_a_revoked_installation_token_is_traded_again_once(
    make_site, app_key, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    site = app_site(make_site, app_key)
    tokens = token_source(
        "github",
        app_id="12345",
        installation_id="678",
        private_key_file=key_file(tmp_path, app_key),
        clock=site.clock,
    )
    forge = site.client(tokens=tokens)
    forge.find_pull(HEAD, BASE)
    site.state.tokens.clear()  # revoked
    forge.find_pull(HEAD, BASE)
    assert len(site.state.apps[0].minted) == 2


def test_a_wrong_key_is_refused_with_what_to_check(make_site, app_key, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    site = app_site(make_site, app_key)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = token_source(
        "github",
        app_id="12345",
        installation_id="678",
        private_key_file=key_file(tmp_path, other),
        clock=site.clock,
    )
    with pytest.raises(ForgeRefused) as caught:
        site.client(tokens=tokens).find_pull(HEAD, BASE)
    assert "private key and installation id" in str(caught.value)
    assert not site.state.apps[0].minted


def test_app_settings_are_checked(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        token_source(
            "github", app_id="1", installation_id="2", private_key_file=tmp_path / "bad.pem"
        )
    with pytest.raises(ConfigError, match="appId, installationId and privateKeyFile"):
        token_source("github", app_id="1")
    with pytest.raises(ConfigError, match="for forge: github"):
        token_source(
            "gitlab", app_id="1", installation_id="2", private_key_file=tmp_path / "bad.pem"
        )
    with pytest.raises(ConfigError, match=r"\$NO_SUCH_TOKEN"):
        token_source("gitea", token_env="NO_SUCH_TOKEN", environ={})
    (tmp_path / "token").write_text("  glpat-abcdefghijklmnop\n")
    source = token_source("gitlab", token_file=tmp_path / "token")
    assert source.token().reveal() == "glpat-abcdefghijklmnop" and source.git_username == "oauth2"
    assert "glpat" not in repr(source) and "glpat" not in str(source.token())
