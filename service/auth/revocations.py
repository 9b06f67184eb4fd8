"""The revocation set: what no longer grants access, kept in memory by every worker.

Access tokens are verified without a database read (signature, claims, then this set). A
revocation is a row in ``oauth_revocations`` — a token (``jti``), a client (every token it was
issued until then) or a consent (every token issued under it until then) — and each worker
keeps the rows that can still refuse a live token in memory:

- on PostgreSQL a thread ``LISTEN``s for the ``NOTIFY`` a revoking transaction sends as it
  commits, and reads the new rows at once (milliseconds);
- on both backends the same thread also reads new rows every :data:`POLL_SECONDS`, so a lost
  notification or connection cannot leave a worker behind for longer than that; SQLite has
  only this poll;
- a request finds the set stale when its last read *started* more than :data:`MAX_STALENESS`
  seconds ago (the thread stopped or the database is slow) and then reads it itself before
  the token counts.

So a revocation refuses its tokens on every worker and every instance sharing the database
within :data:`MAX_STALENESS` seconds of its commit (docs/security.md). Revocations are
appended under a lock held until commit, so their sequence numbers commit in order and a
worker needs to read only the rows after the last one it has.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from service.storage import revocation_store
from service.storage.db import Connection, Database
from service.storage.notifications import listen_for_notifications
from service.storage.revocation_store import Revocation

log = logging.getLogger(__name__)

Kind = Literal["token", "client", "consent"]
#: The longest a revocation may take to reach every worker (seconds); see the module text.
MAX_STALENESS = 1.0
#: How often the listening thread reads new revocations even without a notification.
POLL_SECONDS = 0.25
#: How long a client or consent revocation is kept: the longest any access token lives (a
#: token issued before the revocation is expired by then).
LONGEST_TOKEN_SECONDS = 900


class RevocationUnavailable(Exception):
    """The revocation set could not be brought up to date (the database is unreachable)."""


def revoke(conn: Connection, revocations: Iterable[Revocation]) -> None:
    """Append revocations in ``conn``'s transaction; every worker hears of them at commit."""
    revocation_store.append(conn, list(revocations))


def revoke_tokens(conn: Connection, tokens: Mapping[str, int]) -> None:
    """Revoke access tokens by ``jti`` (→ their ``exp``)."""
    now = int(time.time())
    revoke(conn, (Revocation("token", jti, now, exp) for jti, exp in tokens.items()))


def revoke_client(conn: Connection, client_id: str) -> None:
    """Refuse every token issued to ``client_id`` until now (e.g. the client is disabled)."""
    now = int(time.time())
    revoke(conn, [Revocation("client", client_id, now, now + LONGEST_TOKEN_SECONDS)])


def withdraw_consent(conn: Connection, consent_id: str) -> None:
    """Refuse every token issued under the consent ``consent_id`` (its ``consent`` claim)."""
    now = int(time.time())
    revoke(conn, [Revocation("consent", consent_id, now, now + LONGEST_TOKEN_SECONDS)])


class RevocationSet:
    """This worker's copy of the live revocations, and the thread that keeps it current."""

    def __init__(self, db: Database, *, max_staleness: float = MAX_STALENESS) -> None:
        self.db = db
        self.max_staleness = max_staleness
        self._by_kind: dict[str, dict[str, Revocation]] = {"token": {}, "client": {}, "consent": {}}
        self._last_seq = 0
        self._synced_at = float("-inf")  # monotonic start of the last complete read
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- asking -------------------------------------------------------------------------------

    def current(self) -> bool:
        """True when the set was read less than ``max_staleness`` seconds ago."""
        return time.monotonic() - self._synced_at < self.max_staleness

    def refuses(self, claims: Mapping[str, Any]) -> bool:
        """Whether a revocation covers the token with these (verified) claims.

        The set must be current (:meth:`current`, else :meth:`sync` first).
        """
        if claims.get("jti") in self._by_kind["token"]:
            return True
        issued = claims.get("iat")
        issued_at = issued if isinstance(issued, int) else 0
        for kind, claim in (("client", "client_id"), ("consent", "consent")):
            value = claims.get(claim)
            found = self._by_kind[kind].get(value) if isinstance(value, str) else None
            # Tokens issued in the second of the revocation are refused too (iat is seconds).
            if found is not None and issued_at <= found.revoked_at:
                return True
        return False

    # -- reading ------------------------------------------------------------------------------

    def sync(self) -> None:
        """Read the revocations committed since the last read (RevocationUnavailable if the
        database cannot be read); several callers at once share one read."""
        started = time.monotonic()
        with self._lock:
            if self._synced_at >= started:
                return  # another caller read after this one asked
            try:
                with self.db.read() as conn:
                    self._read(conn)
            except Exception as exc:
                raise RevocationUnavailable(str(exc)) from exc
            self._synced_at = started

    def _read(self, conn: Connection) -> None:
        rows = revocation_store.after(conn, self._last_seq)
        now = int(time.time())
        for seq, row in rows:
            self._last_seq = max(self._last_seq, seq)
            entries = self._by_kind.get(row.kind)
            if entries is None or row.expires_at < now:
                continue
            known = entries.get(row.value)
            if known is None or known.revoked_at < row.revoked_at:
                entries[row.value] = row
        for entries in self._by_kind.values():  # forget what can no longer refuse a token
            for value in [v for v, e in entries.items() if e.expires_at < now]:
                del entries[value]

    # -- keeping current ----------------------------------------------------------------------

    def start(self) -> None:
        """Read the set and start the thread that keeps it current."""
        try:
            self.sync()
        except RevocationUnavailable:
            log.warning("revocation set not readable yet; requests will retry", exc_info=True)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name="telemon-revocations", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (requests then read the set themselves when it is stale)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self.db.notifications_supported:
                    self._listen()
                else:
                    self._poll()
            except Exception:  # the database restarted: try again after a pause
                log.warning("revocation set: database unreachable", exc_info=True)
                self._stopping.wait(POLL_SECONDS)

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self.sync()
            self._stopping.wait(POLL_SECONDS)

    def _listen(self) -> None:
        with listen_for_notifications(self.db, revocation_store.CHANNEL) as listener:
            while not self._stopping.is_set():
                self.sync()  # after LISTEN: nothing committed from here on can be missed
                for _ in listener.notifications(timeout=POLL_SECONDS, stop_after=1):
                    pass
