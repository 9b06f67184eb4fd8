"""Delivery workers: claim a subscription with due work, send its events in order, record it.

PostgreSQL (``telemon worker``, any number of processes and threads): a worker locks the
subscription's delivery row with ``SELECT … FOR UPDATE SKIP LOCKED`` and keeps the lock while it
sends, so two workers never deliver the same subscription at once and events go out in order;
if the worker dies (``kill -9``) its connection drops and PostgreSQL releases the lock. Workers
sleep until ``NOTIFY`` from a committing alert transaction (``LISTEN``), with a poll as fallback.

SQLite (embedded; the worker inside ``telemon serve``): a write transaction must never stay open
while a receiver answers, so a worker takes a time-limited lease on the delivery row in one
short transaction, sends outside any transaction, and records the outcome in another. A lease
outlives the longest possible attempt; a worker that dies leaves a lease that simply expires.
Several ``serve --workers N`` processes may each run a worker: the lease keeps them apart.

Delivery is at least once: an event is deleted only after a 2xx and a commit; a crash in between
sends it again (same event number, so the receiver can drop the repeat). Failures are retried
with exponential backoff and full jitter up to a cap; after ``subscription_max_failures`` the
Subscription's status becomes ``error`` with the reason in ``Subscription.error``, retries go on
at the cap, and the first success makes it ``active`` again. Nothing is dropped.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from service.fhir.service import FhirService, now_micros
from service.runtime import metrics
from service.runtime.background import stop_threads
from service.settings import Settings
from service.storage import repository as repo
from service.storage import subscription_store as store
from service.storage.db import Connection
from service.storage.notifications import listen_for_notifications
from service.subscriptions.delivery import Outcome, Sender
from service.subscriptions.notification import SIGNATURE_HEADER, notification_bundle, signature

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Batch:
    """What one attempt sends: events (none: a heartbeat) and the focus resources."""

    events: list[store.Event]
    resources: dict[tuple[str, str, int], str]

    @property
    def kind(self) -> str:
        """The notification type."""
        return "event-notification" if self.events else "heartbeat"


def runs_in_serve(settings: Settings, *, embedded: bool) -> bool:
    """Whether ``telemon serve`` delivers itself: ``TELEMON_DELIVERY_WORKER`` on, or auto on
    an embedded database (SQLite; on PostgreSQL ``telemon worker`` processes deliver)."""
    return settings.delivery_worker == "on" or (settings.delivery_worker == "auto" and embedded)


def retry_delay(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before the next attempt after ``failures`` consecutive failures: exponential
    backoff with full jitter (uniform in [0, min(cap, base·2^(failures-1))])."""
    return rng.uniform(0, min(cap, base * 2 ** min(failures - 1, 62)))


class DeliveryWorker:
    """Delivery loops (``threads`` of them) for one process."""

    def __init__(
        self,
        fhir: FhirService,
        wakeup: threading.Event | None = None,
        *,
        threads: int = 1,
    ) -> None:
        self.fhir = fhir
        self.db = fhir.db
        self.settings = fhir.settings
        self.wakeup = wakeup if wakeup is not None else threading.Event()
        self.threads = threads
        self.stopping = threading.Event()
        self._running: list[threading.Thread] = []
        self._rng = random.Random()
        self._owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        timeout = self.settings.subscription_timeout_seconds
        # Connect, send and read each have the timeout; the lease outlasts all three and the
        # writes around them. (A lease that runs out early costs a repeat, never a loss: the
        # outcome of a lost lease is not recorded.)
        self.lease_micros = int((3 * timeout + 5) * 1_000_000)

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery threads (and on PostgreSQL the LISTEN thread)."""
        self.stopping.clear()
        for index in range(self.threads):
            self._spawn(self._loop, f"telemon-delivery-{index}", f"{self._owner}:{index}")
        if self.db.notifications_supported:
            self._spawn(self._listen, "telemon-delivery-listen")

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, name=name, args=args, daemon=True)
        thread.start()
        self._running.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the attempts in progress (waits at most ``timeout`` seconds)."""
        stop_threads(self._running, self.stopping, self.wakeup, timeout)

    def _loop(self, owner: str) -> None:
        sender = Sender(allow_private=self.settings.subscription_allow_private)
        try:
            while not self.stopping.is_set():
                # Cleared before looking for work, so a wake-up during the look is not lost.
                self.wakeup.clear()
                try:
                    worked = self.deliver_once(sender, owner)
                except Exception:  # the database went away, a bug: log, pause, go on
                    log.exception("notification delivery failed")
                    self.stopping.wait(1.0)
                    continue
                if not worked:
                    self.wakeup.wait(self._idle_seconds())
        finally:
            sender.close()
            if self.db.serializes_writes:  # the leases of the SQLite path (deliver_once)
                self._release(owner)

    def _release(self, owner: str) -> None:
        try:
            with self.db.write() as conn:
                store.release(conn, owner)
        except Exception:  # stopping anyway; the lease expires by itself
            log.warning("could not release delivery leases", exc_info=True)

    def _idle_seconds(self) -> float:
        """How long to sleep without a wake-up: until the next retry or heartbeat is due, at
        most the poll interval."""
        poll = self.settings.subscription_poll_seconds
        now = now_micros()
        try:
            with self.db.read() as conn:
                due = store.next_due(conn, now)
        except Exception:
            log.warning("cannot read the next delivery time", exc_info=True)
            return poll
        if due is None:
            return poll
        return min(poll, max(0.0, (due - now) / 1_000_000))

    def _listen(self) -> None:
        """PostgreSQL: turn NOTIFYs from committing alert transactions into wake-ups."""
        while not self.stopping.is_set():
            try:
                with listen_for_notifications(self.db, store.CHANNEL) as listener:
                    self.wakeup.set()  # catch up with what was queued while not listening
                    while not self.stopping.is_set():
                        for _ in listener.notifications(timeout=0.25):
                            self.wakeup.set()
            except Exception:  # the database restarted: listen again after a pause
                log.warning("delivery LISTEN connection lost", exc_info=True)
                self.stopping.wait(1.0)

    # -- one attempt -----------------------------------------------------------------------------

    def deliver_once(self, sender: Sender, owner: str) -> bool:
        """Claim one subscription with due work and make one attempt; False when none is due."""
        now = now_micros()
        if not self.db.serializes_writes:
            # The row stays locked while the notification is sent: other writers go on.
            with self.db.write() as conn:
                claim = store.claim_locked(conn, now)
                if claim is None:
                    return False
                batch = self._batch(conn, claim)
                outcome = self._send(sender, claim, batch)
                status = self._record(conn, claim, batch, outcome, None)
                stale = self._shows_other_status(conn, claim, status)
        else:
            with self.db.read() as conn:
                if not store.any_leasable(conn, now):
                    return False
            with self.db.write() as conn:
                claim = store.claim_leased(conn, now, owner, now + self.lease_micros)
            if claim is None:
                return False
            with self.db.read() as conn:
                batch = self._batch(conn, claim)
            outcome = self._send(sender, claim, batch)
            with self.db.write() as conn:
                status = self._record(conn, claim, batch, outcome, owner)
                stale = self._shows_other_status(conn, claim, status)
        self._count(batch, outcome)
        if stale:
            self.sync_status(claim.subscription.subscription_id)
        return True

    def _batch(self, conn: Connection, claim: store.Claim) -> Batch:
        sub = claim.subscription
        size = min(self.settings.subscription_batch_size, sub.max_count or 2**31)
        events = store.pending_events(conn, sub.subscription_id, claim.delivered_through, size)
        resources: dict[tuple[str, str, int], str] = {}
        if events and sub.content == "full-resource":
            keys = [(e.res_type, e.res_id, e.version_id) for e in events]
            resources = store.version_contents(conn, keys)
        return Batch(events, resources)

    def _send(self, sender: Sender, claim: store.Claim, batch: Batch) -> Outcome:
        sub = claim.subscription
        now = now_micros()
        base = self.settings.base_url.rstrip("/") if self.settings.base_url else None
        body = notification_bundle(
            base=base,
            subscription_id=sub.subscription_id,
            status=claim.status,
            kind=batch.kind,
            events_since_start=sub.event_count,
            events=batch.events,
            content=sub.content,
            resources=batch.resources,
            now=now,
        )
        headers = dict(sub.headers)
        if sub.secret is not None:
            headers[SIGNATURE_HEADER] = signature(sub.secret, now // 1_000_000, body)
        timeout = min(self.settings.subscription_timeout_seconds, sub.timeout_seconds or 1e9)
        return sender.send(sub.endpoint, body, headers, timeout)

    def _record(
        self,
        conn: Connection,
        claim: store.Claim,
        batch: Batch,
        outcome: Outcome,
        owner: str | None,
    ) -> str | None:
        """Store the outcome; returns the delivery status (None: a lost lease, nothing kept)."""
        now = now_micros()
        revised = claim.subscription.revision != claim.revision_seen
        if outcome.delivered:
            through = batch.events[-1].number if batch.events else claim.delivered_through
            kept = store.record_success(conn, claim, through, now, owner=owner)
            return "active" if kept else None
        failures = (0 if revised else claim.failures) + 1
        status = "error" if failures >= self.settings.subscription_max_failures else "active"
        delay = retry_delay(
            failures,
            self.settings.subscription_retry_base_seconds,
            self.settings.subscription_retry_max_seconds,
            self._rng,
        )
        log.warning(
            "Subscription/%s: notification failed (%s), attempt %s, next in %.1f s",
            claim.subscription.subscription_id,
            outcome.reason,
            failures,
            delay,
        )
        kept = store.record_failure(
            conn,
            claim,
            failures=failures,
            status=status,
            next_attempt_at=now + int(delay * 1_000_000),
            error=outcome.reason or outcome.kind,
            owner=owner,
        )
        return status if kept else None

    def _count(self, batch: Batch, outcome: Outcome) -> None:
        if not outcome.delivered:
            metrics.DELIVERY_FAILURES.labels(outcome.kind).inc()
            return
        if not batch.events:
            metrics.HEARTBEATS_DELIVERED.inc()
            return
        metrics.EVENTS_DELIVERED.inc(len(batch.events))
        now = now_micros()
        for event in batch.events:
            metrics.DELIVERY_LATENCY.observe(max(0, now - event.created_at) / 1_000_000)

    # -- the Subscription's FHIR status ----------------------------------------------------------

    def _shows_other_status(self, conn: Connection, claim: store.Claim, status: str | None) -> bool:
        """True when the Subscription resource does not show the delivery ``status`` just
        recorded. Compared with the resource itself, not with the status before the attempt:
        a worker killed after recording an attempt and before updating the resource would
        otherwise leave it showing the old status for good. A plain read: the row is locked
        only by :meth:`sync_status`, in its own transaction (the claim holds the delivery row,
        and a client's update locks the two the other way round)."""
        if status is None:
            return False
        current = repo.fetch_current(conn, "Subscription", claim.subscription.subscription_id)
        if current is None or current.deleted or current.content is None:
            return False
        shown: str | None = orjson.loads(current.content).get("status")
        return shown != status

    def sync_status(self, subscription_id: str) -> None:
        """Make the Subscription resource's ``status`` and ``error`` show the delivery state
        (a new version only when they differ, and never over a newer client update)."""
        rtype = self.fhir.resource_type("Subscription")
        with self.db.write() as conn:
            current = repo.fetch_current(conn, "Subscription", subscription_id, for_update=True)
            state = store.delivery_state(conn, subscription_id)
            if (
                current is None
                or current.deleted
                or current.content is None
                or state is None
                or not state.current
                or not state.active
            ):
                return
            resource = orjson.loads(current.content)
            error = state.last_error if state.status == "error" else None
            if resource.get("status") == state.status and resource.get("error") == error:
                return
            resource["status"] = state.status
            if error is None:
                resource.pop("error", None)
            else:
                resource["error"] = error
            self.fhir.store_many_in(conn, rtype, [(subscription_id, resource)])
        log.info("Subscription/%s is now %s", subscription_id, state.status)
