"""Wake-ups between processes: PostgreSQL's ``NOTIFY`` when a transaction commits, ``LISTEN``.

Only where :attr:`Database.notifications_supported <service.storage.db.Database.
notifications_supported>`; elsewhere :func:`notify` does nothing and listeners poll.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from service.storage.db import Database


def notify(conn: Connection, channel: str) -> None:
    """Wake the listeners of ``channel`` when the transaction of ``conn`` commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})


class Listener:
    """A connection listening on a channel."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def notifications(self, *, timeout: float, stop_after: int | None = None) -> Iterator[None]:
        """One item per notification as it arrives, for up to ``timeout`` seconds (or until
        ``stop_after`` of them)."""
        for _ in self._conn.notifies(timeout=timeout, stop_after=stop_after):
            yield None


@contextmanager
def listen_for_notifications(db: Database, channel: str) -> Iterator[Listener]:
    """A connection of its own (outside the pool, autocommit) listening on ``channel``; every
    notification committed after this returns reaches it."""
    url = make_url(db.url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f"LISTEN {channel}")
        yield Listener(conn)
