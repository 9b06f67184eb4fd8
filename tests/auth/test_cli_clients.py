"""``telemon clients …``: registering PGOs and backend services, importing a MedMij OCL, and a
backend registered by the CLI getting a token (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey, RSAKey
from typer.testing import CliRunner

from service.auth import clients
from service.cli import app
from service.settings import get_settings
from service.storage.db import Database
from tests.auth.conftest import Backend, backend_token

EXAMPLE_OCL = Path(__file__).resolve().parents[2] / "docs" / "examples" / "oauthclientlist.xml"
NS = "xmlns://afsprakenstelsel.medmij.nl/oauthclientlist/release2/"
runner = CliRunner()


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI pointed at the test database (settings are cached: cleared around the test)."""
    monkeypatch.setenv("TELEMON_DATABASE_URL", database_url)
    monkeypatch.delenv("TELEMON_JWKS_ALLOW_PRIVATE", raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich: keep table rows on one line
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def _add_backend(client_id: str, *args: str) -> Any:
    return runner.invoke(app, ["clients", "add-backend", "--client-id", client_id, *args])


def _client(url: str, client_id: str) -> clients.Client | None:
    db = Database(url)
    try:
        with db.read() as conn:
            return clients.get(conn, client_id, include_inactive=True)
    finally:
        db.dispose()


def _secret(output: str) -> str:
    return output.strip().splitlines()[-1].rsplit(" ", 1)[-1]


def _jwks_file(tmp_path: Path, keys: list[dict[str, Any]], name: str = "jwks.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"keys": keys}))
    return path


def _ec_key() -> ECKey:
    key = ECKey.generate_key("P-384", private=True)
    key.ensure_kid()
    return key


def test_add_pgo_registers_a_confidential_client(cli_env: str) -> None:
    args = ["clients", "add-pgo", "--client-id", "pgo.example.org", "--name", "Voorbeeld PGO"]
    uris = ["--redirect-uri", "https://pgo.example.org/cb", "--redirect-uri", "http://127.0.0.1/cb"]

    first = runner.invoke(app, [*args, *uris])

    assert first.exit_code == 0, first.output
    secret = _secret(first.output)
    client = _client(cli_env, "pgo.example.org")
    assert client is not None and client.kind == "pgo" and client.name == "Voorbeeld PGO"
    assert client.redirect_uris == ["https://pgo.example.org/cb", "http://127.0.0.1/cb"]
    assert client.scope == clients.PGO_SCOPES
    assert client.secret_hash == clients.hash_secret(secret) != secret  # only the hash is kept

    again = runner.invoke(app, [*args, *uris])
    renewed = runner.invoke(app, [*args, *uris, "--replace"])

    assert again.exit_code == 1 and "already registered" in again.output
    assert renewed.exit_code == 0, renewed.output
    renewed_client = _client(cli_env, "pgo.example.org")
    assert renewed_client is not None and renewed_client.check_client_secret(
        _secret(renewed.output)
    )
    assert not renewed_client.check_client_secret(secret)


def test_add_pgo_refuses_a_non_https_redirect(cli_env: str) -> None:
    args = ["--client-id", "p.example.org", "--name", "P"]
    result = runner.invoke(
        app, ["clients", "add-pgo", *args, "--redirect-uri", "http://p.example.org/cb"]
    )
    assert result.exit_code == 1
    assert "must use https" in result.output
    assert _client(cli_env, "p.example.org") is None


@pytest.mark.parametrize("kind", ["ES384", "RS384"])
def test_add_backend_with_a_jwks_file(cli_env: str, tmp_path: Path, kind: str) -> None:
    key: ECKey | RSAKey = _ec_key() if kind == "ES384" else RSAKey.generate_key(2048, private=True)
    key.ensure_kid()
    jwks = _jwks_file(tmp_path, [key.as_dict(private=False) | {"alg": kind, "use": "sig"}])
    result = _add_backend(
        "ehr-1", "--jwks-file", str(jwks), "--scope", "system/Observation.crs system/Flag.rs"
    )
    assert result.exit_code == 0, result.output
    client = _client(cli_env, "ehr-1")
    assert client is not None and client.kind == "backend"
    assert client.scope == "system/Observation.crs system/Flag.rs"
    assert client.jwks is not None and client.jwks["keys"][0]["kid"] == key.kid
    assert "d" not in client.jwks["keys"][0]
    listing = runner.invoke(app, ["clients", "list"])
    assert listing.exit_code == 0
    assert "ehr-1" in listing.output and "1 inline key(s)" in listing.output


def _bad_jwks_cases() -> dict[str, tuple[list[dict[str, Any]], str]]:
    ec = _ec_key()
    rsa = RSAKey.generate_key(2048, private=True)
    rsa.ensure_kid()
    p256 = ECKey.generate_key("P-256", private=True)
    p256.ensure_kid()
    small = RSAKey.generate_key(1024, private=True)
    small.ensure_kid()
    public = ec.as_dict(private=False)
    return {
        "private EC key": ([ec.as_dict(private=True)], "private or symmetric key material"),
        "private RSA key": ([rsa.as_dict(private=True)], "private or symmetric key material"),
        "symmetric key": ([{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}], "private or symmetric"),
        "RS256 key": ([rsa.as_dict(private=False) | {"alg": "RS256"}], "alg 'RS256'"),
        "ES384 alg on an RSA key": ([rsa.as_dict(private=False) | {"alg": "ES384"}], "alg"),
        "P-256 curve": ([p256.as_dict(private=False)], "crv 'P-256'"),
        "RSA under 2048 bits": ([small.as_dict(private=False)], "under 2048 bits"),
        "encryption key": ([public | {"use": "enc"}], "signing key"),
        "no kid": ([{k: v for k, v in public.items() if k != "kid"}], "'kid'"),
        "duplicate kid": ([public, public], "unique"),
        "OKP key": ([{"kty": "OKP", "crv": "Ed25519", "x": "AA", "kid": "o"}], "kty 'OKP'"),
        "no keys": ([], "no keys"),
    }


@pytest.mark.filterwarnings("ignore:Key size should be >= 2048 bits")
def test_add_backend_rejects_bad_jwks(cli_env: str, tmp_path: Path) -> None:
    for name, (keys, message) in _bad_jwks_cases().items():
        path = _jwks_file(tmp_path, keys)
        result = _add_backend(
            "ehr-bad", "--jwks-file", str(path), "--scope", "system/Observation.rs"
        )
        assert result.exit_code == 1, (name, result.output)
        assert "Refused" in result.output and message in result.output, (name, result.output)
    not_json = tmp_path / "broken.json"
    not_json.write_text("{'keys': [")
    result = _add_backend(
        "ehr-bad", "--jwks-file", str(not_json), "--scope", "system/Observation.rs"
    )
    assert result.exit_code == 1 and "is not JSON" in result.output
    both = _add_backend(
        "ehr-bad",
        "--jwks-file",
        str(not_json),
        "--jwks-url",
        "https://ehr.example.org/jwks",
        "--scope",
        "system/Observation.rs",
    )
    assert both.exit_code == 2 and "exactly one of --jwks-file or --jwks-url" in both.output
    assert _client(cli_env, "ehr-bad") is None


@pytest.mark.parametrize(
    "scope",
    [
        "patient/Observation.rs",  # not a system scope
        "system/Observation.read",  # SMART v1
        "system/Observation.dus",  # not an in-order subset of cruds
        "launch/patient",
        "system/Observation.rs openid",
        "",
    ],
)
def test_add_backend_rejects_bad_scopes(cli_env: str, tmp_path: Path, scope: str) -> None:
    path = _jwks_file(tmp_path, [_ec_key().as_dict(private=False)])
    result = _add_backend("ehr-s", "--jwks-file", str(path), "--scope", scope)
    assert result.exit_code == 1, result.output
    assert "Refused" in result.output
    assert "SMART v2 scope" in result.output or "At least one scope" in result.output
    assert _client(cli_env, "ehr-s") is None


def _ocl(*entries: str) -> str:
    body = "".join(f"<OAuthclient>{e}</OAuthclient>" for e in entries)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><OAuthclientlist xmlns="{NS}">'
        f"<Tijdstempel>2026-11-22T09:00:00Z</Tijdstempel><Volgnummer>2</Volgnummer>"
        f"<OAuthclients>{body}</OAuthclients></OAuthclientlist>"
    )


def _entry(host: str, name: str, *uris: str) -> str:
    redirects = "".join(f"<RedirectURL>{u}</RedirectURL>" for u in uris)
    return (
        f"<Hostname>{host}</Hostname><OAuthclientOrganisatienaam>{name}"
        f"</OAuthclientOrganisatienaam><RedirectURLs>{redirects}</RedirectURLs>"
    )


def test_import_ocl_is_idempotent_and_updates(cli_env: str, tmp_path: Path) -> None:
    first = runner.invoke(app, ["clients", "import-ocl", str(EXAMPLE_OCL)])
    again = runner.invoke(app, ["clients", "import-ocl", str(EXAMPLE_OCL)])

    assert first.exit_code == 0, first.output
    assert "2 created, 0 updated, 0 skipped, 0 rejected." in first.output
    pgo = _client(cli_env, "pgo.example.org")
    assert pgo is not None and pgo.kind == "pgo" and pgo.name == "Voorbeeld PGO"
    assert pgo.redirect_uris == ["https://pgo.example.org/oauth/callback"]
    secret = next(
        line.rsplit(" ", 1)[-1]
        for line in first.output.splitlines()
        if line.startswith("created  pgo.example.org")
    )
    assert pgo.check_client_secret(secret)
    other = _client(cli_env, "medmij.gezondthuis.example")
    assert other is not None and other.redirect_uris == [
        "https://medmij.gezondthuis.example/cb",
        "https://medmij.gezondthuis.example/app/cb",
    ]
    assert again.exit_code == 0, again.output
    assert "0 created, 0 updated, 2 skipped, 0 rejected." in again.output
    assert "secret" not in again.output

    # a renamed client (no RedirectURLs: keeps its registered ones), a new one, one dropped
    changed = tmp_path / "ocl2.xml"
    changed.write_text(
        _ocl(
            "<Hostname>PGO.example.org</Hostname>"
            "<OAuthclientOrganisatienaam>Voorbeeld PGO B.V.</OAuthclientOrganisatienaam>",
            _entry("nieuw.example.nl", "Nieuw", "https://nieuw.example.nl/cb"),
        )
    )
    third = runner.invoke(app, ["clients", "import-ocl", str(changed)])
    assert third.exit_code == 0, third.output
    assert "1 created, 1 updated, 0 skipped, 0 rejected." in third.output
    renamed = _client(cli_env, "pgo.example.org")
    assert renamed is not None and renamed.name == "Voorbeeld PGO B.V."
    assert renamed.redirect_uris == ["https://pgo.example.org/oauth/callback"]
    assert renamed.check_client_secret(secret)  # an update keeps the secret
    assert _client(cli_env, "medmij.gezondthuis.example") is not None  # not in the list: kept


def test_import_ocl_rejects_bad_entries(cli_env: str, tmp_path: Path) -> None:
    path = tmp_path / "ocl.xml"
    path.write_text(
        _ocl(
            _entry("good.example.org", "Good", "https://good.example.org/cb"),
            _entry("evil.example.org", "Evil", "https://attacker.example/cb"),
            _entry("plain.example.org", "Plain", "http://plain.example.org/cb"),
            "<Hostname>bare.example.org</Hostname>"
            "<OAuthclientOrganisatienaam>Bare</OAuthclientOrganisatienaam>",
            _entry("not a host", "Bad", "https://x.example/cb"),
        )
    )
    result = runner.invoke(app, ["clients", "import-ocl", str(path)])
    assert result.exit_code == 1
    assert "1 created, 0 updated, 0 skipped, 4 rejected." in result.output
    assert "rejected evil.example.org: redirect URL 'https://attacker.example/cb' is not on" in (
        result.output
    )
    assert "rejected plain.example.org: Redirect URI" in result.output
    assert "rejected bare.example.org: no redirect URL" in result.output
    assert "is not a hostname" in result.output
    assert _client(cli_env, "good.example.org") is not None
    for host in ("evil.example.org", "plain.example.org", "bare.example.org"):
        assert _client(cli_env, host) is None


XXE = """<?xml version="1.0"?>
<!DOCTYPE OAuthclientlist [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<OAuthclientlist><OAuthclients><OAuthclient><Hostname>&xxe;</Hostname>
<OAuthclientOrganisatienaam>X</OAuthclientOrganisatienaam></OAuthclient></OAuthclients>
</OAuthclientlist>"""

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<OAuthclientlist><OAuthclients><OAuthclient><Hostname>a.example</Hostname>
<OAuthclientOrganisatienaam>&lol3;</OAuthclientOrganisatienaam></OAuthclient></OAuthclients>
</OAuthclientlist>"""


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (XXE, "declares a DTD or entities"),
        (LAUGHS, "declares a DTD or entities"),
        ("<OAuthclientlist><OAuthclients>", "not well-formed"),
        (f'<Whitelist xmlns="{NS}"/>', "root element is 'whitelist'"),
        (
            _ocl(_entry("a.example.org", "A", "https://a.example.org/1")).replace(
                "</OAuthclients>",
                f"<OAuthclient>{_entry('a.example.org', 'A2')}</OAuthclient></OAuthclients>",
            ),
            "more than once",
        ),
    ],
)
def test_import_ocl_refuses_unsafe_or_invalid_xml(
    cli_env: str, tmp_path: Path, document: str, message: str
) -> None:
    path = tmp_path / "ocl.xml"
    path.write_text(document)
    result = runner.invoke(app, ["clients", "import-ocl", str(path)])
    assert result.exit_code == 1
    assert "Refused" in result.output and message in result.output, result.output
    listing = runner.invoke(app, ["clients", "list"])
    assert "0 registered OAuth clients" in listing.output


def test_cli_registered_backend_gets_a_token(
    cli_env: str, tmp_path: Path, oauth_client: TestClient
) -> None:
    key = _ec_key()
    jwks = _jwks_file(tmp_path, [key.as_dict(private=False)])
    registered = _add_backend(
        "ehr-e2e", "--jwks-file", str(jwks), "--scope", "system/Observation.rs system/Flag.rs"
    )
    assert registered.exit_code == 0, registered.output

    response = backend_token(
        oauth_client, Backend("ehr-e2e", key, "ES384"), "system/Observation.rs system/Patient.rs"
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "system/Observation.rs"
    assert 0 < body["expires_in"] <= 300
    searched = oauth_client.get(
        "/fhir/Observation", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert searched.status_code == 200, searched.text
