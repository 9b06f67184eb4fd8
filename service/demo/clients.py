"""The demo's OAuth clients: a PGO app and an EHR backend service, with local credentials.

``telemon demo`` registers both through the functions behind ``telemon clients add-pgo`` and
``add-backend`` (:func:`service.auth.clients.new_pgo`, :func:`~service.auth.clients.new_backend`),
and keeps their credentials in a local folder (``./demo-keys`` by default) so that the printed
instructions, ``telemon demo token`` and a developer can use them:

* ``pgo-client-secret.txt`` (mode 0600): the PGO's client secret;
* ``backend-private.jwk.json`` (mode 0600): the backend's private EC P-384 key (ES384);
* ``backend-public.jwks.json``: its public JWKS, the one registered (inline, not by URL).

Idempotent: an existing secret and key are reused, so running the demo again keeps the
registrations and the files as they were; a missing one is made anew and registered.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from service.auth import clients
from service.storage.db import Connection

PGO_CLIENT_ID = "demo-pgo.localhost"
PGO_NAME = "Demo PGO (telemon demo)"
#: Loopback, so http is allowed (RFC 8252 section 7.3); nothing needs to listen there for the demo.
PGO_REDIRECT_URI = "http://127.0.0.1:8765/callback"
BACKEND_CLIENT_ID = "demo-ehr"
BACKEND_NAME = "Demo EHR (telemon demo)"
#: What an EHR needs (as in docs/api/ehr-systems.md): enrol patients (Patient, CarePlan), read
#: measurements, work the alerts (Flags), set personal thresholds (Goals referenced from the
#: CarePlan), and read the audit trail.
BACKEND_SCOPE = (
    "system/Patient.crs system/Device.rs system/Observation.rs system/Flag.rus "
    "system/CarePlan.crus system/Goal.crus system/AuditEvent.rs"
)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALG = "ES384"
PGO_SECRET_FILE = "pgo-client-secret.txt"
PRIVATE_KEY_FILE = "backend-private.jwk.json"
PUBLIC_JWKS_FILE = "backend-public.jwks.json"


class DemoClientError(Exception):
    """The demo credentials cannot be read or used; the message says what to do."""


@dataclass(frozen=True, slots=True)
class DemoClients:
    """The registered demo clients and where their credentials are."""

    keys_dir: Path
    pgo_id: str
    pgo_secret: str
    redirect_uri: str
    backend_id: str
    backend_scope: str

    @property
    def private_key_file(self) -> Path:
        """The backend's private key (JWK, mode 0600)."""
        return self.keys_dir / PRIVATE_KEY_FILE

    @property
    def public_jwks_file(self) -> Path:
        """The backend's public JWKS (the registered one)."""
        return self.keys_dir / PUBLIC_JWKS_FILE

    @property
    def pgo_secret_file(self) -> Path:
        """The PGO's client secret (mode 0600)."""
        return self.keys_dir / PGO_SECRET_FILE


def register_demo_clients(conn: Connection, keys_dir: Path) -> DemoClients:
    """Register (or re-register, unchanged) the demo PGO and backend; write their credentials."""
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pgo, new_secret = clients.new_pgo(PGO_CLIENT_ID, PGO_NAME, [PGO_REDIRECT_URI])
    secret_file = keys_dir / PGO_SECRET_FILE
    secret = secret_file.read_text().strip() if secret_file.exists() else ""
    if not secret:
        secret = new_secret
    pgo = dataclasses.replace(pgo, secret_hash=clients.hash_secret(secret))
    key = load_backend_key(keys_dir) if (keys_dir / PRIVATE_KEY_FILE).exists() else _new_key()
    jwks = {"keys": [key.as_dict(private=False) | {"alg": ASSERTION_ALG, "use": "sig"}]}
    backend = clients.new_backend(BACKEND_CLIENT_ID, BACKEND_NAME, BACKEND_SCOPE, jwks=jwks)
    _write_private(secret_file, secret + "\n")
    _write_private(keys_dir / PRIVATE_KEY_FILE, orjson.dumps(key.as_dict(private=True)).decode())
    (keys_dir / PUBLIC_JWKS_FILE).write_bytes(orjson.dumps(jwks, option=orjson.OPT_INDENT_2))
    clients.save(conn, pgo)
    clients.save(conn, backend)
    return DemoClients(
        keys_dir, PGO_CLIENT_ID, secret, PGO_REDIRECT_URI, BACKEND_CLIENT_ID, BACKEND_SCOPE
    )


def _new_key() -> ECKey:
    key = ECKey.generate_key("P-384", private=True)
    key.ensure_kid()
    return key


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (0600), replacing ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def load_backend_key(keys_dir: Path) -> ECKey:
    """The demo backend's private key from ``keys_dir``."""
    path = keys_dir / PRIVATE_KEY_FILE
    try:
        key = ECKey.import_key(orjson.loads(path.read_bytes()))
    except FileNotFoundError as exc:
        raise DemoClientError(f"No demo key at {path}: run `telemon demo` first") from exc
    except (orjson.JSONDecodeError, JoseError, ValueError, TypeError) as exc:
        raise DemoClientError(
            f"{path} is not a private EC key (JWK); delete it and rerun `telemon demo`"
        ) from exc
    if not key.is_private or key.kid is None:
        raise DemoClientError(
            f"{path} is not a private key with a kid; delete it and rerun `telemon demo`"
        )
    return key


def client_assertion(key: ECKey, client_id: str, token_url: str, *, lifetime: int = 240) -> str:
    """A signed SMART Backend Services client assertion (``private_key_jwt``) for ``token_url``."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    header = {"alg": ASSERTION_ALG, "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, claims, key, algorithms=[ASSERTION_ALG])


def request_backend_token(
    token_url: str, key: ECKey, client_id: str, scope: str, *, timeout: float = 10.0
) -> dict[str, Any]:
    """Ask ``token_url`` for a backend access token; the token response (DemoClientError if not)."""
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion(key, client_id, token_url),
    }
    try:
        response = httpx.post(token_url, data=form, timeout=timeout)
    except httpx.HTTPError as exc:
        raise DemoClientError(
            f"Could not reach {token_url} ({exc.__class__.__name__}): is `telemon serve` running?"
        ) from exc
    if response.status_code == 404:
        raise DemoClientError(
            f"{token_url} answered 404: the server runs without authorization "
            "(TELEMON_AUTH=open). Restart it with TELEMON_AUTH=oauth."
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
        raise DemoClientError(f"{token_url} answered {response.status_code}: {response.text[:500]}")
    return body
