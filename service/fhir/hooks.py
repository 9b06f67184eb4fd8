"""What other packages hook into the FHIR service's writes: the registry and its types.

Write listeners (alert evaluation, subscription notifications, metrics) hear about every version
written, inside its transaction; content hooks handle a type's client-supplied content
(Subscriptions' secrets). :class:`service.fhir.service.FhirService` owns one :class:`Hooks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from service.core.outcome import Issue
from service.storage.db import Connection
from service.storage.repository import NewVersion, StoredVersion

if TYPE_CHECKING:
    from service.fhir.service import FhirService


@dataclass(frozen=True, slots=True)
class WriteEvent:
    """A resource version written in the current transaction (``resource`` None: deleted).

    Listeners may add ``warnings`` (an Observation no alert rule evaluates): the write still
    succeeds, and the warnings reach its client in the write's OperationOutcome.
    """

    res_type: str
    res_id: str
    version_id: int
    resource: dict[str, Any] | None
    patient_id: str | None  # the patient compartment (before deletion, for a delete)
    previous: str | None = None  # JSON of the version this one replaced, if any
    warnings: list[Issue] = field(default_factory=list)


#: Called inside the write transaction, after the writes, with what was written. Listeners
#: (alert evaluation, notifications) may write more in the same transaction or raise to abort it.
WriteListener = Callable[["FhirService", Connection, list[WriteEvent]], None]


class ContentHook(Protocol):
    """Type-specific handling of client-supplied content (e.g. Subscriptions' secrets).

    ``check`` runs before the write transaction opens (it may be slow: a DNS lookup) and raises
    a FhirError for content it refuses; ``apply`` runs inside the write transaction, just
    before the version is stamped, and returns the content to store (it may keep parts of it
    elsewhere in the same transaction). Content the server writes itself
    (:meth:`FhirService.store_many_in`) passes neither.
    """

    def check(self, data: dict[str, Any]) -> None:
        """Refuse content (FhirError, 4xx) that the type's rules do not allow."""

    def apply(
        self,
        conn: Connection,
        res_id: str,
        data: dict[str, Any],
        current: StoredVersion | None,
    ) -> dict[str, Any]:
        """The content to store for ``res_id`` (``current``: its current version, if any)."""


def event_of(item: NewVersion, previous: StoredVersion | None = None) -> WriteEvent:
    """The write event for a version just stored."""
    return WriteEvent(
        item.res_type,
        item.res_id,
        item.version_id,
        item.resource,
        item.index.patient_id,
        previous.content if previous is not None else None,
    )


@dataclass(slots=True)
class Hooks:
    """The listeners and content hooks registered on one service."""

    listeners: list[WriteListener] = field(default_factory=list)
    #: Told about the versions the server writes itself (``store_many_in``: alerts' Flags,
    #: Subscription status changes), which :attr:`listeners` never see.
    authored_listeners: list[WriteListener] = field(default_factory=list)
    content_hooks: dict[str, ContentHook] = field(default_factory=dict)

    def notify(
        self,
        fhir: FhirService,
        conn: Connection,
        events: list[WriteEvent],
        *,
        authored: bool = False,
    ) -> None:
        """Tell every listener (``authored``: every authored listener) what was just written,
        inside the same transaction; ``fhir`` is the service they may write more through."""
        if events:
            for listener in self.authored_listeners if authored else self.listeners:
                listener(fhir, conn, events)

    def check_content(self, res_type: str, data: dict[str, Any]) -> None:
        """The type's content hook check (before the write transaction), if it has one."""
        hook = self.content_hooks.get(res_type)
        if hook is not None:
            hook.check(data)

    def apply_content(
        self,
        conn: Connection,
        res_type: str,
        res_id: str,
        data: dict[str, Any],
        current: StoredVersion | None = None,
    ) -> dict[str, Any]:
        """The content to store after the type's content hook (inside the transaction)."""
        hook = self.content_hooks.get(res_type)
        return data if hook is None else hook.apply(conn, res_id, data, current)
