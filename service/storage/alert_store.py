"""Persistence of alert episode state (one row per alert, the JSON of the episode)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, select

from service.storage.db import dialect_insert
from service.storage.tables import alert_episodes

A = alert_episodes.c


def load(conn: Connection, patient_id: str, *, since: int) -> list[dict[str, Any]]:
    """Episodes of a patient that are open, or changed at or after ``since`` (µs)."""
    rows = conn.execute(
        select(A.state).where(
            A.patient_id == patient_id, (A.status == "active") | (A.updated >= since)
        )
    )
    return [orjson.loads(r.state) for r in rows]


def get(conn: Connection, alert_id: str) -> dict[str, Any] | None:
    """One episode's state, or None."""
    row = conn.execute(select(A.state).where(A.alert_id == alert_id)).first()
    return orjson.loads(row.state) if row else None


def save(conn: Connection, states: Sequence[dict[str, Any]], *, now: int) -> None:
    """Insert or replace episode states (one statement for all of them)."""
    if not states:
        return
    stmt = dialect_insert(conn, alert_episodes)
    stmt = stmt.on_conflict_do_update(
        index_elements=[A.alert_id],
        set_={
            "status": stmt.excluded.status,
            "updated": stmt.excluded.updated,
            "state": stmt.excluded.state,
        },
    )
    conn.execute(
        stmt,
        [
            {
                "alert_id": s["id"],
                "patient_id": s["patient_id"],
                "rule_id": s["rule_id"],
                "status": s["status"],
                "updated": now,
                "state": orjson.dumps(s).decode(),
            }
            for s in states
        ],
    )
