"""Rows of registered OAuth clients (``oauth_clients``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import orjson
from sqlalchemy import Connection, delete, insert, select, update

from service.storage.tables import oauth_clients

K = oauth_clients.c
ClientKind = Literal["pgo", "backend"]


@dataclass(slots=True)
class ClientRecord:
    """A client registration as stored (``kind``: ``pgo`` or ``backend``)."""

    client_id: str
    kind: ClientKind
    name: str
    scope: str
    redirect_uris: list[str] = field(default_factory=list)
    secret_hash: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    active: bool = True


R = TypeVar("R", bound=ClientRecord)


def _values(client: ClientRecord) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "kind": client.kind,
        "name": client.name,
        "secret_hash": client.secret_hash,
        "redirect_uris": orjson.dumps(client.redirect_uris).decode(),
        "scope": client.scope,
        "jwks": orjson.dumps(client.jwks).decode() if client.jwks is not None else None,
        "jwks_url": client.jwks_url,
        "active": client.active,
        "created": int(time.time()),
    }


def _record(row: Any, make: type[R]) -> R:
    return make(
        client_id=row.client_id,
        kind=row.kind,
        name=row.name,
        scope=row.scope,
        redirect_uris=orjson.loads(row.redirect_uris),
        secret_hash=row.secret_hash,
        jwks=orjson.loads(row.jwks) if row.jwks else None,
        jwks_url=row.jwks_url,
        active=bool(row.active),
    )


def save(conn: Connection, client: ClientRecord) -> None:
    """Insert or replace a client registration."""
    conn.execute(delete(oauth_clients).where(K.client_id == client.client_id))
    conn.execute(insert(oauth_clients).values(**_values(client)))


def get(conn: Connection, client_id: str, make: type[R], *, include_inactive: bool) -> R | None:
    """A client by id as a ``make`` (:class:`ClientRecord` or a subclass), or None; only an
    active one unless ``include_inactive``."""
    query = select(oauth_clients).where(K.client_id == client_id)
    if not include_inactive:
        query = query.where(K.active.is_(True))
    row = conn.execute(query).first()
    return _record(row, make) if row else None


def all_clients(conn: Connection, make: type[R]) -> list[R]:
    """Every registered client as a ``make``, by id."""
    return [_record(r, make) for r in conn.execute(select(oauth_clients).order_by(K.client_id))]


def remove(conn: Connection, client_id: str) -> bool:
    """Delete a registration; True when it existed."""
    return bool(conn.execute(delete(oauth_clients).where(K.client_id == client_id)).rowcount)


def set_active(conn: Connection, client_id: str, active: bool) -> bool:
    """Enable or disable a client; True when it is registered."""
    result = conn.execute(
        update(oauth_clients).where(K.client_id == client_id).values(active=active)
    )
    return bool(result.rowcount)
