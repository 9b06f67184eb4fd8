"""``service.demo.clients``: the demo's PGO and EHR registrations and their local credentials."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from service.auth import clients
from service.demo import clients as demo_clients
from service.demo.clients import DemoClientError, register_demo_clients
from service.storage.db import Database


@contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _register(db: Database, keys_dir: Path) -> demo_clients.DemoClients:
    with db.write() as conn:
        return register_demo_clients(conn, keys_dir)


def _stored(db: Database, client_id: str) -> clients.Client:
    with db.read() as conn:
        client = clients.get(conn, client_id)
    assert client is not None
    return client


def test_registers_both_clients_and_writes_credentials_owner_only(
    db: Database, tmp_path: Path
) -> None:
    keys = tmp_path / "demo-keys"

    first = _register(db, keys)

    pgo = _stored(db, demo_clients.PGO_CLIENT_ID)
    assert pgo.kind == "pgo"
    assert pgo.redirect_uris == [demo_clients.PGO_REDIRECT_URI]
    assert pgo.check_client_secret(first.pgo_secret)
    assert pgo.check_grant_type("authorization_code")
    backend = _stored(db, demo_clients.BACKEND_CLIENT_ID)
    assert backend.kind == "backend"
    assert backend.scope == demo_clients.BACKEND_SCOPE
    assert backend.jwks_url is None  # registered inline
    public = json.loads(first.public_jwks_file.read_text())
    assert backend.jwks == public
    assert "d" not in public["keys"][0]
    clients.check_public_jwks(public)  # what `telemon clients add-backend` accepts
    private = json.loads(first.private_key_file.read_text())
    assert private["kid"] == public["keys"][0]["kid"] and "d" in private
    assert first.pgo_secret_file.read_text().strip() == first.pgo_secret
    assert _mode(keys) == 0o700
    assert _mode(first.private_key_file) == 0o600
    assert _mode(first.pgo_secret_file) == 0o600
    assert sorted(p.name for p in keys.iterdir()) == sorted(
        [demo_clients.PGO_SECRET_FILE, demo_clients.PRIVATE_KEY_FILE, demo_clients.PUBLIC_JWKS_FILE]
    )  # no temporary files left behind


def test_running_again_keeps_secret_and_key(db: Database, tmp_path: Path) -> None:
    keys = tmp_path / "demo-keys"
    first = _register(db, keys)
    key_before = first.private_key_file.read_text()

    again = _register(db, keys)

    assert again == first
    assert again.private_key_file.read_text() == key_before
    assert _stored(db, demo_clients.PGO_CLIENT_ID).check_client_secret(first.pgo_secret)
    with db.read() as conn:
        ids = [c.client_id for c in clients.all_clients(conn)]
    assert ids == sorted([demo_clients.BACKEND_CLIENT_ID, demo_clients.PGO_CLIENT_ID])


def test_lost_credentials_are_made_anew_and_registered(db: Database, tmp_path: Path) -> None:
    keys = tmp_path / "demo-keys"
    first = _register(db, keys)
    old_kid = json.loads(first.public_jwks_file.read_text())["keys"][0]["kid"]
    first.pgo_secret_file.unlink()
    first.private_key_file.unlink()

    again = _register(db, keys)

    assert again.pgo_secret != first.pgo_secret
    pgo = _stored(db, demo_clients.PGO_CLIENT_ID)
    assert pgo.check_client_secret(again.pgo_secret)
    assert not pgo.check_client_secret(first.pgo_secret)
    new_kid = json.loads(again.public_jwks_file.read_text())["keys"][0]["kid"]
    assert new_kid != old_kid
    registered = _stored(db, demo_clients.BACKEND_CLIENT_ID).jwks or {}
    assert [k["kid"] for k in registered["keys"]] == [new_kid]


def test_an_unusable_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DemoClientError, match="run `telemon demo` first"):
        demo_clients.load_backend_key(tmp_path)
    (tmp_path / demo_clients.PRIVATE_KEY_FILE).write_text("{not json")
    with pytest.raises(DemoClientError, match="not a private EC key"):
        demo_clients.load_backend_key(tmp_path)
    public = ECKey.generate_key("P-384", private=True).as_dict(private=False)
    (tmp_path / demo_clients.PRIVATE_KEY_FILE).write_text(json.dumps(public))
    with pytest.raises(DemoClientError, match="not a private key"):
        demo_clients.load_backend_key(tmp_path)


def test_client_assertion_claims() -> None:
    key = ECKey.generate_key("P-384", private=True)
    key.ensure_kid()

    token = demo_clients.client_assertion(key, "demo-ehr", "http://127.0.0.1:1/oauth/token")

    decoded = jwt.decode(token, key, algorithms=["ES384"])
    assert decoded.header == {"alg": "ES384", "kid": key.kid, "typ": "JWT"}
    claims = decoded.claims
    assert claims["iss"] == claims["sub"] == "demo-ehr"
    assert claims["aud"] == "http://127.0.0.1:1/oauth/token"
    assert 0 < claims["exp"] - claims["iat"] <= 300
    again = jwt.decode(
        demo_clients.client_assertion(key, "demo-ehr", "x"), key, algorithms=["ES384"]
    ).claims
    assert again["jti"] != claims["jti"]


def test_token_request_errors_say_what_to_do(live_server: str, tmp_path: Path) -> None:
    key = ECKey.generate_key("P-384", private=True)
    key.ensure_kid()
    with (
        _closed_port() as port,
        pytest.raises(DemoClientError, match="is `telemon serve` running"),
    ):
        demo_clients.request_backend_token(
            f"http://127.0.0.1:{port}/oauth/token", key, "demo-ehr", "system/Flag.rs"
        )
    open_server = live_server.removesuffix("/fhir") + "/oauth/token"  # TELEMON_AUTH=open
    with pytest.raises(DemoClientError, match="TELEMON_AUTH=oauth"):
        demo_clients.request_backend_token(open_server, key, "demo-ehr", "system/Flag.rs")
    assert httpx.post(open_server, data={}).status_code == 404
