"""Queue notifications in the transaction that writes the Flag.

Every Flag version written — raised, upgraded, acknowledged, resolved or retracted by the alert
engine, or updated by an EHR — is matched against each active Subscription by running the
Subscription's own criteria, restricted to the Flags just written, through the search engine
inside the same transaction (exact search semantics; no second matcher to drift from it). Each
match becomes a numbered event in the outbox. The transaction commits the Flag and its events
together, or neither; a worker is woken once it has committed.

Only transactions that write Flags do any of this: measurement ingest without an alert pays one
scan of its write events.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache

from sqlalchemy import Connection

from service.fhir.outcome import FhirError
from service.fhir.service import FhirService, WriteEvent, now_micros
from service.storage import subscription_store as store
from service.storage.db import after_commit
from service.subscriptions.model import criteria_params
from service.subscriptions.registration import SubscriptionRegistration

log = logging.getLogger(__name__)

_WAKE = "subscriptions-wakeup"


@lru_cache(maxsize=1024)
def _params(criteria: str) -> tuple[tuple[str, str], ...]:
    return criteria_params(criteria)


class Outbox:
    """The FhirService listener that turns Flag writes into queued notification events."""

    def __init__(self, registration: SubscriptionRegistration, wakeup: threading.Event) -> None:
        self.registration = registration
        self.wakeup = wakeup

    def on_write(self, _fhir: FhirService, conn: Connection, events: list[WriteEvent]) -> None:
        """Queue an event per (matching Subscription, Flag version written)."""
        flags = [e for e in events if e.res_type == "Flag" and e.resource is not None]
        if not flags:
            return
        now = now_micros()
        candidates = store.matchable(conn, now)
        if not candidates:
            return
        ids = tuple(sorted({e.res_id for e in flags}))
        queued = 0
        for subscription_id, criteria in candidates:  # in id order: a fixed lock order
            try:
                query = self.registration.criteria_query(_params(criteria), ids)
            except FhirError as exc:  # stored criteria this version no longer understands
                log.warning("Subscription/%s criteria not usable: %s", subscription_id, exc)
                continue
            matched = store.matching_ids(conn, query)
            versions = [(e.res_type, e.res_id, e.version_id) for e in flags if e.res_id in matched]
            if versions:
                store.enqueue(conn, subscription_id, versions, now)
                queued += len(versions)
        if queued:
            store.notify_workers(conn)
            after_commit(conn, _WAKE, self.wakeup.set)
