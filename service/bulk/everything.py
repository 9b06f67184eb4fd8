"""``Patient/{id}/$everything``: one patient's compartment, paged.

Holds the Patient and every resource in the patient's compartment that the caller may search,
in storage order, paged by row id (a keyset cursor, stable while data is added). ``_type``
narrows the types (``AuditEvent`` only when named: reading the record writes audit events, which
would otherwise fill every next page); ``_since`` keeps resources changed after it; ``start`` and
``end`` keep resources whose clinical date (Observation.effective, Flag.period, CarePlan.period,
Goal.start) overlaps them, and every resource without such a date.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.core.criteria import Cursor
from service.core.dates import DateFormatError, parse_range
from service.core.outcome import FhirError
from service.fhir.reads import ReadHook
from service.fhir.search import decode_cursor, encode_cursor
from service.fhir.service import FhirService
from service.storage import bulk_store
from service.storage.repository import StoredVersion

#: Types left out unless ``_type`` names them.
ON_REQUEST_ONLY = frozenset({"AuditEvent"})


@dataclass(frozen=True, slots=True)
class EverythingPage:
    """One page of ``$everything``."""

    rows: list[StoredVersion]
    next_cursor: str | None


def compartment_types(fhir: FhirService) -> list[str]:
    """The types in a patient's compartment, the Patient first."""
    names = [t.name for t in fhir.registry if t.compartment]
    return sorted(names, key=lambda n: (n != "Patient", n))


def _instant(fhir: FhirService, name: str, value: str | None, *, high: bool = False) -> int | None:
    if not value:
        return None
    try:
        low, top = parse_range(value, fhir.zone)
    except DateFormatError as exc:
        raise FhirError.invalid(f"{name}: {exc}", name) from exc
    return top if high else low


def everything(
    fhir: FhirService,
    patient_id: str,
    params: dict[str, str],
    *,
    may_search: Callable[[str], bool],
    patient_ids: tuple[str, ...] | None,
    within: ReadHook | None = None,
) -> EverythingPage:
    """A page of the patient's record (404 outside ``patient_ids`` or unknown, 410 deleted);
    ``within`` is called with the page's versions in the transaction that reads them (then a
    write transaction, as for a search)."""
    fhir.read("Patient", patient_id, patient_ids=patient_ids)
    known = compartment_types(fhir)
    if params.get("_type"):
        types = [t.strip() for t in params["_type"].split(",") if t.strip()]
        for t in types:
            if t not in known:
                raise FhirError.invalid(f"{t} is not in a patient's compartment", "_type")
        types = [t for t in types if may_search(t)]
    else:
        types = [t for t in known if t not in ON_REQUEST_ONLY and may_search(t)]
    count_raw = params.get("_count")
    if count_raw is not None and not count_raw.isdigit():
        raise FhirError.invalid("_count must be a non-negative integer", "_count")
    count = min(
        int(count_raw) if count_raw else fhir.settings.default_page_size,
        fhir.settings.max_page_size,
    )
    after = decode_cursor(params["_cursor"]).rid if params.get("_cursor") else None
    dated = [t.name for t in fhir.registry if t.primary_date and t.name != "Patient"]
    if not types or count == 0:
        return EverythingPage([], None)
    with fhir.transaction(within) as conn:
        rows, last = bulk_store.compartment_page(
            conn,
            patient_id,
            types,
            since=_instant(fhir, "_since", params.get("_since")),
            start=_instant(fhir, "start", params.get("start")),
            end=_instant(fhir, "end", params.get("end"), high=True),
            dated=dated,
            after_rid=after,
            count=count,
        )
        # granular scopes (service/fhir/confinement.py): what the token may not read is left out
        shown = [r for r in rows if fhir.visible(patient_ids, r)]
        if within is not None:
            within(conn, shown)
    cursor = encode_cursor(Cursor(None, last)) if last is not None else None
    return EverythingPage(shown, cursor)
