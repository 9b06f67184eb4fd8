"""Queue notifications in the transaction that writes the Flag.

Every Flag version written — raised, upgraded, acknowledged, resolved or retracted by the alert
engine, or updated by an EHR — is matched against each active Subscription by running the
Subscription's own criteria, restricted to the Flags written, through the search engine inside
the same transaction (exact search semantics; no second matcher to drift from it). Each match
becomes a numbered event in the outbox. The transaction commits the Flags and their events
together, or neither; a worker is woken once it has committed.

The matching runs once per transaction, just before it commits, over the last version of each
Flag it wrote (versions in between were never visible to anyone): one query per Subscription
and one counter update per matching Subscription, however many patients' alerts a transaction
Bundle raised, and the counters are always locked in the same (id) order. Transactions that
write no Flag pay one scan of their write events.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache

from service.core.outcome import FhirError
from service.fhir.hooks import WriteEvent
from service.fhir.service import FhirService, now_micros
from service.storage import subscription_store as store
from service.storage.db import Connection, after_commit, before_commit
from service.subscriptions.model import criteria_params
from service.subscriptions.registration import WAKE, SubscriptionRegistration

log = logging.getLogger(__name__)


@lru_cache(maxsize=1024)
def _params(criteria: str) -> tuple[tuple[str, str], ...]:
    return criteria_params(criteria)


class _Written:
    """The Flag versions one transaction wrote; matched and queued when it is about to commit."""

    def __init__(self, outbox: Outbox, conn: Connection) -> None:
        self.outbox = outbox
        self.conn = conn
        self.versions: dict[str, int] = {}  # Flag id → the last version written

    def __call__(self) -> None:
        self.outbox.flush(self.conn, self.versions)


class Outbox:
    """The FhirService listener that turns Flag writes into queued notification events."""

    def __init__(self, registration: SubscriptionRegistration, wakeup: threading.Event) -> None:
        self.registration = registration
        self.wakeup = wakeup

    def on_write(self, _fhir: FhirService, conn: Connection, events: list[WriteEvent]) -> None:
        """Note the Flag versions written (deletions notify nothing: nothing matches them)."""
        flags = [e for e in events if e.res_type == "Flag" and e.resource is not None]
        if not flags:
            return
        written = before_commit(conn, "subscriptions-outbox", _Written(self, conn))
        for event in flags:
            written.versions[event.res_id] = max(
                event.version_id, written.versions.get(event.res_id, 0)
            )

    def flush(self, conn: Connection, versions: dict[str, int]) -> None:
        """Queue an event per (matching Subscription, Flag): the transaction's last step."""
        now = now_micros()
        candidates = store.matchable(conn, now)
        if not candidates:
            return
        ids = tuple(sorted(versions))
        queued = 0
        for subscription_id, criteria in candidates:  # in id order: a fixed lock order
            try:
                query = self.registration.criteria_query(_params(criteria), ids)
            except FhirError as exc:  # stored criteria this version no longer understands
                log.warning("Subscription/%s criteria not usable: %s", subscription_id, exc)
                continue
            matched = store.matching_ids(conn, query)
            if matched:
                store.enqueue(
                    conn,
                    subscription_id,
                    [("Flag", i, versions[i]) for i in ids if i in matched],
                    now,
                )
                queued += len(matched)
        if queued:
            store.notify_workers(conn)
            after_commit(conn, WAKE, self.wakeup.set)
