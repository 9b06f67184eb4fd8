"""Subscription writes through the FHIR API: checked, secrets kept apart, status the server's.

The FHIR service calls :meth:`SubscriptionRegistration.check` before it opens the write
transaction (the endpoint's host is resolved there: the SSRF guard runs at create time as well
as at every delivery) and :meth:`SubscriptionRegistration.apply` inside it, so the resource and
its delivery settings are written together or not at all.
"""

from __future__ import annotations

import threading
from typing import Any

from service.core import ssrf
from service.core.criteria import IdCriterion, SearchQuery
from service.core.outcome import FhirError, Issue
from service.fhir.hooks import WriteEvent
from service.fhir.service import FhirService, now_micros
from service.storage import subscription_store as store
from service.storage.db import Connection, after_commit
from service.storage.repository import StoredVersion
from service.subscriptions.model import read_spec, stored_form, unredact

CRITERIA = "Subscription.criteria"
#: The after-commit key of the wake-up of this process's delivery worker.
WAKE = "subscriptions-wakeup"


class SubscriptionRegistration:
    """The content hook for Subscription writes, and the listener for their deletion."""

    def __init__(self, fhir: FhirService, wakeup: threading.Event) -> None:
        self.fhir = fhir
        self.wakeup = wakeup

    def criteria_query(
        self, params: tuple[tuple[str, str], ...], ids: tuple[str, ...] = ()
    ) -> SearchQuery:
        """The Flag search the criteria stand for (optionally only over Flags ``ids``): the
        search engine itself is the matcher. Unknown parameters or values are a 422."""
        try:
            query, _ = self.fhir.parse_query(
                self.fhir.resource_type("Flag"), list(params), strict=True
            )
        except FhirError as exc:
            issues = [Issue(i.code, i.diagnostics, (CRITERIA,)) for i in exc.issues]
            raise FhirError.rejected(issues) from exc
        if ids:
            query.criteria.append(IdCriterion(ids))
        return query

    def check(self, data: dict[str, Any]) -> None:
        """Refuse what cannot be delivered (422): the spec, the criteria, the endpoint."""
        spec = read_spec(data)
        self.criteria_query(spec.params)
        try:
            ssrf.resolve_target(
                spec.endpoint,
                allow_private=self.fhir.settings.subscription_allow_private,
                noun="endpoint",
            )
        except ssrf.UnsafeTarget as exc:
            raise FhirError.invalid_value(str(exc), "Subscription.channel.endpoint") from exc

    def apply(
        self,
        conn: Connection,
        res_id: str,
        data: dict[str, Any],
        current: StoredVersion | None,
    ) -> dict[str, Any]:
        """Keep the settings and secrets in ``subscriptions``; return the resource to store."""
        spec = read_spec(data)
        stored = store.get(conn, res_id)
        headers, secret = unredact(
            spec, stored.headers if stored else [], stored.secret if stored else None
        )
        store.save(
            conn,
            store.SubscriptionRow(
                subscription_id=res_id,
                active=spec.active,
                criteria=spec.criteria,
                endpoint=spec.endpoint,
                content=spec.content,
                headers=list(headers),
                secret=secret,
                heartbeat_seconds=spec.heartbeat_seconds,
                timeout_seconds=spec.timeout_seconds,
                max_count=spec.max_count,
                end_at=spec.end_at,
            ),
            now=now_micros(),
        )
        # New settings (a fixed endpoint, say) are tried at once, not after the backoff.
        store.notify_workers(conn)
        after_commit(conn, WAKE, self.wakeup.set)
        return stored_form(data, "active" if spec.active else "off")

    def on_write(self, _fhir: FhirService, conn: Connection, events: list[WriteEvent]) -> None:
        """FhirService write listener: a deleted Subscription takes its queue with it."""
        for event in events:
            if event.res_type == "Subscription" and event.resource is None:
                store.remove(conn, event.res_id)

