"""FHIR R4 Subscriptions on alert Flags: rest-hook notifications delivered reliably and safely.

- :mod:`.model` reads and checks a Subscription resource and hides its secrets (pure).
- :mod:`.registration` is the FHIR service's content hook for Subscription writes: it checks the
  criteria and the endpoint (SSRF guard) before the transaction, keeps the delivery settings and
  secrets in ``subscriptions`` and stores the resource with its secrets redacted.
- :mod:`.outbox` matches every written Flag version against the active Subscriptions with the
  search engine itself, inside the Flag's own transaction, and appends numbered events to the
  outbox: no alert without its notification, no notification for a rolled-back alert.
- :mod:`.notification` builds the notification Bundles (Subscriptions R5 Backport IG for R4) and
  their HMAC signature (pure).
- :mod:`.delivery` sends one notification over HTTP to a pinned, checked address.
- :mod:`.worker` claims subscriptions with due work (row locks on PostgreSQL, leases on
  SQLite), delivers their events in order, retries with backoff and keeps the status.
"""

from __future__ import annotations

import threading

from service.fhir.service import FhirService
from service.subscriptions.outbox import Outbox
from service.subscriptions.registration import SubscriptionRegistration


class Subscriptions:
    """Subscriptions attached to one FHIR service: the content hook, the outbox and the event
    that wakes this process's delivery worker when a transaction has queued notifications."""

    def __init__(self, fhir: FhirService, wakeup: threading.Event | None = None) -> None:
        self.fhir = fhir
        self.wakeup = wakeup if wakeup is not None else threading.Event()
        self.registration = SubscriptionRegistration(fhir, self.wakeup)
        self.outbox = Outbox(self.registration, self.wakeup)

    def attach(self) -> Subscriptions:
        """Handle Subscription writes and queue notifications for Flag writes from now on."""
        self.fhir.content_hooks["Subscription"] = self.registration
        self.fhir.listeners.append(self.registration.on_write)
        self.fhir.listeners.append(self.outbox.on_write)
        self.fhir.authored_listeners.append(self.outbox.on_write)
        return self
