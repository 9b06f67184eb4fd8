"""SQL of the rate limits' failure counters (table ``rate_limits``), the same on SQLite and
PostgreSQL: a read of several counters, an atomic count-one-more, and the purge."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, case, delete, select

from service.storage.db import dialect_insert
from service.storage.tables import rate_limits


def current(conn: Connection, keys: Sequence[str], now: int) -> dict[str, tuple[int, int]]:
    """``key → (failures, window_end)`` of the counters whose window has not ended."""
    rows = conn.execute(
        select(rate_limits.c.key, rate_limits.c.failures, rate_limits.c.window_end).where(
            rate_limits.c.key.in_(list(keys)), rate_limits.c.window_end > now
        )
    )
    return {row.key: (row.failures, row.window_end) for row in rows}


def count_failure(conn: Connection, key: str, now: int, window: int) -> tuple[int, int]:
    """One more failure for ``key``: ``(failures, window_end)`` after it.

    One atomic statement (an upsert): concurrent failures in other workers each count. A
    window starts at the first failure after the previous one ended.
    """
    ended = rate_limits.c.window_end <= now
    statement = (
        dialect_insert(conn, rate_limits)
        .values(key=key, failures=1, window_end=now + window)
        .on_conflict_do_update(
            index_elements=[rate_limits.c.key],
            set_={
                "failures": case((ended, 1), else_=rate_limits.c.failures + 1),
                "window_end": case((ended, now + window), else_=rate_limits.c.window_end),
            },
        )
        .returning(rate_limits.c.failures, rate_limits.c.window_end)
    )
    row = conn.execute(statement).one()
    return int(row.failures), int(row.window_end)


def purge(conn: Connection, now: int) -> None:
    """Drop the counters whose window has ended (they count nothing any more)."""
    conn.execute(delete(rate_limits).where(rate_limits.c.window_end <= now))
