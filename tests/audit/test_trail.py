"""The audit trail stamps its AuditEvents itself (for speed): exactly as the generic stamping
of the FHIR service would, the same JSON and the same search-index values (each value once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.audit.events import AccessRecord, Actor, Touched
from service.audit.trail import AuditTrail
from service.bootstrap import build_service
from service.settings import Settings
from service.storage.db import Database

PATIENT_APP = Actor(
    "pgo.example.org", "Patient/p1", "jti-1", "192.0.2.7", (("x-request-id", "req-1"),)
)
BACKEND = Actor("ehr-1", None, "jti-2", "127.0.0.1", ())
NOBODY = Actor(None, None, None, None, ())
OBS_1 = Touched("Observation", "o1", 1, "p1")
RECORDS = [
    (BACKEND, AccessRecord("create", "Observation", touched=[OBS_1])),
    (PATIENT_APP, AccessRecord("read", "Observation", touched=[OBS_1])),
    (
        BACKEND,
        AccessRecord(
            "search-type",
            "Observation",
            "patient=p1&code=http://loinc.org|29463-7",
            touched=[
                Touched("Observation", "o1", 1, "p1"),
                Touched("Observation", "o2", 3, "p2"),
                Touched("Device", "d1", 1, None),
            ],
        ),
    ),
    (BACKEND, AccessRecord("search-type", "Flag", "status=active")),  # nothing found
    (NOBODY, AccessRecord("login", query="/fhir/Observation", outcome="4", description="401")),
    (BACKEND, AccessRecord("token", query="grant_type=client_credentials", issued_token="abc")),
    (PATIENT_APP, AccessRecord("consent", description="consent: allow", patient_ids=["p1"])),
    (BACKEND, AccessRecord("transaction", outcome="8", description="500 boom \x00")),
    (BACKEND, AccessRecord("delete", "Flag", touched=[Touched("Flag", "f", 4, None)])),
]


@pytest.fixture
def trail(tmp_path: Path) -> AuditTrail:
    url = f"sqlite:///{tmp_path}/t.sqlite"
    settings = Settings(
        database_url=url,
        profiles_dir=Path(__file__).resolve().parents[2] / "fhir_profiles",
    )
    return AuditTrail(build_service(settings, Database(url)))


@pytest.mark.parametrize(("actor", "record"), RECORDS)
def test_events_are_stamped_and_indexed_as_the_service_would(
    trail: AuditTrail, actor: Actor, record: AccessRecord
) -> None:
    versions = trail.versions(actor, record)
    assert versions
    for version in versions:
        generic = trail.fhir.stamp(
            trail.rtype, version.resource, version.res_id, 1, version.last_updated
        )
        assert version.content == generic.content
        fast, slow = version.index, generic.index
        assert (fast.patient_id, fast.date_low, fast.date_high) == (
            slow.patient_id,
            slow.date_low,
            slow.date_high,
        )
        assert len(set(fast.tokens)) == len(fast.tokens)
        assert len(set(fast.references)) == len(fast.references)
        assert set(fast.tokens) == set(slow.tokens)
        assert set(fast.references) == set(slow.references)
        assert (fast.dates, fast.quantities, fast.strings) == (
            slow.dates,
            slow.quantities,
            slow.strings,
        )
