"""Alert tests through the FHIR API: enrolment (CarePlan/Goal), Observation builders, Flag checks.

Every test runs on SQLite and PostgreSQL (the root ``database_url`` fixture). The service's clock
is pinned to :data:`tests.clock.NOW` (a Wednesday morning), and times are built around
:data:`BASE`, three minutes before it, so that several readings "today" stay on one local day and
in the past whenever the tests run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from service.alerts.episodes import Alert
from service.alerts.ingest import AlertService
from service.app import create_app
from service.settings import Settings
from tests.clock import NOW, PinnedClock

TZ = ZoneInfo("Europe/Amsterdam")
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
LOCAL_OBS = "http://telemon.example.org/fhir/CodeSystem/observation-codes"
ALERT_RULES = "http://telemon.example.org/fhir/CodeSystem/alert-rules"
PLANS = {
    "HF": "http://telemon.example.org/fhir/PlanDefinition/heart-failure",
    "COPD": "http://telemon.example.org/fhir/PlanDefinition/copd",
}
PAUSE = "http://telemon.example.org/fhir/StructureDefinition/monitoring-pause"
ACKNOWLEDGED = "http://telemon.example.org/fhir/StructureDefinition/alert-acknowledged"
LATE = "http://telemon.example.org/fhir/StructureDefinition/alert-late"
BASELINE = "http://telemon.example.org/fhir/StructureDefinition/alert-baseline"
FLAG_PRIORITY = "http://hl7.org/fhir/StructureDefinition/flag-priority"
FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
SEVERITY = {
    "absent": "2667000",
    "mild": "255604002",
    "moderate": "1255665007",
    "severe": "24484000",
}
NYHA = {1: "420300004", 2: "421704003", 3: "420913000", 4: "422293003"}
SYMPTOM = {
    "dyspnoea": "267036007",
    "oedema": "267038008",
    "dizziness": "404640003",
    "chest-pain": "29857009",
    "fatigue": "84229001",
}


BASE = (NOW - timedelta(minutes=3)).astimezone(TZ)


def at(days: int = 0, minutes: float = 0, hours: float = 0) -> str:
    """The local wall-clock time of BASE, ``days`` local calendar days earlier, minus an offset.

    Calendar days, not 24 h steps: across a DST change the wall-clock time stays the same.
    """
    day = BASE.date() - timedelta(days=days)
    local = datetime.combine(day, BASE.time(), tzinfo=TZ)
    moment = (local.astimezone(UTC) - timedelta(minutes=minutes, hours=hours)).astimezone(TZ)
    return moment.isoformat()


def local_at(day: str, clock: str) -> str:
    """A local Amsterdam time on a given date (``2026-03-29``, ``07:30``) with its offset."""
    moment = datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=TZ)
    return moment.isoformat()


# -- Observation builders --------------------------------------------------------------------


def observation(
    patient_id: str,
    code: str,
    effective: str,
    *,
    system: str = LOINC,
    ident: str | None = None,
    **value: Any,
) -> dict[str, Any]:
    """An Observation with one code, an identifier and the given value[x]/component keys."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:telemon:test", "value": ident or str(uuid.uuid4())}],
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": effective,
        **value,
    }


def qty(value: float, unit: str) -> dict[str, Any]:
    """A UCUM Quantity."""
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def weight(pid: str, kg: float, when: str, unit: str = "kg", **kw: Any) -> dict[str, Any]:
    """Body weight (LOINC 29463-7)."""
    return observation(pid, "29463-7", when, valueQuantity=qty(kg, unit), **kw)


def bp(pid: str, sbp: float, dbp: float, when: str, unit: str = "mm[Hg]") -> dict[str, Any]:
    """A blood-pressure panel (85354-9) with systolic and diastolic components."""
    return observation(
        pid,
        "85354-9",
        when,
        component=[
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
             "valueQuantity": qty(sbp, unit)},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
             "valueQuantity": qty(dbp, unit)},
        ],
    )


def hr(pid: str, bpm: float, when: str) -> dict[str, Any]:
    """Heart rate (8867-4)."""
    return observation(pid, "8867-4", when, valueQuantity=qty(bpm, "/min"))


def spo2(
    pid: str, value: float, when: str, unit: str = "%", oxygen: bool | None = None
) -> dict[str, Any]:
    """SpO2 (2708-6), optionally with the supplemental-oxygen component."""
    extra: dict[str, Any] = {}
    if oxygen is not None:
        extra["component"] = [
            {"code": {"coding": [{"system": SNOMED, "code": "266702001"}]},
             "valueBoolean": oxygen}
        ]
    return observation(pid, "2708-6", when, valueQuantity=qty(value, unit), **extra)


def rr(pid: str, value: float, when: str) -> dict[str, Any]:
    """Respiratory rate (9279-1)."""
    return observation(pid, "9279-1", when, valueQuantity=qty(value, "/min"))


def temp(pid: str, value: float, when: str, unit: str = "Cel") -> dict[str, Any]:
    """Body temperature (8310-5)."""
    return observation(pid, "8310-5", when, valueQuantity=qty(value, unit))


def pef(pid: str, value: float, when: str) -> dict[str, Any]:
    """Peak expiratory flow (19935-6)."""
    return observation(pid, "19935-6", when, valueQuantity=qty(value, "L/min"))


def symptom(pid: str, name: str, severity: str, when: str) -> dict[str, Any]:
    """An HF symptom finding (SNOMED) answered with a severity."""
    answer = {"coding": [{"system": SNOMED, "code": SEVERITY[severity]}]}
    return observation(pid, SYMPTOM[name], when, system=SNOMED, valueCodeableConcept=answer)


def nyha(pid: str, klass: int, when: str) -> dict[str, Any]:
    """Patient-reported NYHA class (88020-3)."""
    answer = {"coding": [{"system": SNOMED, "code": NYHA[klass]}]}
    return observation(pid, "88020-3", when, valueCodeableConcept=answer)


def item(pid: str, code: str, yes: bool, when: str) -> dict[str, Any]:
    """An Anthonisen item (increased-dyspnoea, increased-sputum-volume/-purulence)."""
    return observation(pid, code, when, system=LOCAL_OBS, valueBoolean=yes)


def score(pid: str, code: str, value: float, when: str) -> dict[str, Any]:
    """A questionnaire score (cat-total, ccq-total, dyspnoea-vas) in ``{score}``."""
    return observation(pid, code, when, system=LOCAL_OBS, valueQuantity=qty(value, "{score}"))


# -- Goals -------------------------------------------------------------------------------------


def goal_quantity(code: str, value: float, unit: str, system: str = LOINC) -> dict[str, Any]:
    """A Goal target setting a value (dry weight, usual SpO2, NYHA class, CAT baseline)."""
    return {
        "measure": {"coding": [{"system": system, "code": code}]},
        "detailQuantity": qty(value, unit),
    }


def goal_range(
    code: str, unit: str, low: float | None = None, high: float | None = None
) -> dict[str, Any]:
    """A Goal target with personal limits."""
    rng: dict[str, Any] = {}
    if low is not None:
        rng["low"] = qty(low, unit)
    if high is not None:
        rng["high"] = qty(high, unit)
    return {"measure": {"coding": [{"system": LOINC, "code": code}]}, "detailRange": rng}


# -- Flags -------------------------------------------------------------------------------------


def priority(flag: dict[str, Any]) -> str:
    """PL / PM / PH of a Flag."""
    for ext in flag.get("extension", []):
        if ext["url"] == FLAG_PRIORITY:
            code: str = ext["valueCodeableConcept"]["coding"][0]["code"]
            return code
    raise AssertionError(f"Flag without priority: {flag}")


def details(flag: dict[str, Any]) -> list[str]:
    """The evidence Observation ids of a Flag."""
    return [
        e["valueReference"]["reference"].removeprefix("Observation/")
        for e in flag.get("extension", [])
        if e["url"] == FLAG_DETAIL
    ]


def has_ext(flag: dict[str, Any], url: str) -> bool:
    """Whether the Flag carries an extension."""
    return any(e["url"] == url for e in flag.get("extension", []))


def text(flag: dict[str, Any]) -> str:
    """The Flag's readable alert text."""
    value: str = flag["code"]["text"]
    return value


def rule_of(flag: dict[str, Any]) -> str:
    """The rule id (Flag.code)."""
    code: str = flag["code"]["coding"][0]["code"]
    return code


@dataclass
class Api:
    """Helpers over the test client: enrol patients, post Observations, read Flags."""

    client: TestClient
    clock: PinnedClock
    notified: list[Alert] = field(default_factory=list)

    def _ok(self, response: Any, *codes: int) -> dict[str, Any]:
        assert response.status_code in (codes or (200, 201)), response.text
        body: dict[str, Any] = response.json() if response.content else {}
        return body

    def patient(self) -> str:
        """A new Patient's id."""
        body = {"resourceType": "Patient", "name": [{"family": "Test"}], "gender": "female"}
        return str(self._ok(self.client.post("/fhir/Patient", json=body), 201)["id"])

    def goal(self, pid: str, *targets: dict[str, Any], start: str | None = "2020-01-01") -> str:
        """A Goal for the patient with the given targets; its id.

        Without ``start`` the Goal is in force from when it was stored, so it would not apply
        to readings taken before that (thresholds in force at the effective time).
        """
        body: dict[str, Any] = {
            "resourceType": "Goal",
            "lifecycleStatus": "active",
            "description": {"text": "telemonitoring target"},
            "subject": {"reference": f"Patient/{pid}"},
            "target": list(targets),
        }
        if start:
            body["startDate"] = start
        return str(self._ok(self.client.post("/fhir/Goal", json=body), 201)["id"])

    def enrol(
        self,
        pid: str | None = None,
        programmes: str | Sequence[str] = "HF",
        *,
        goals: Iterable[dict[str, Any]] = (),
        disable: Iterable[str] = (),
        enable: Iterable[str] = (),
        pause: tuple[str, str | None] | None = None,
        start: str = "2020-01-01",
    ) -> str:
        """Enrol a (new) patient: an active CarePlan per the programme(s); returns the id.

        ``programmes``: "HF", "COPD" or both; ``goals``: Goal targets (one Goal each);
        ``disable``/``enable``: rule ids toggled by ``activity.detail.doNotPerform``;
        ``pause``: a monitoring pause (start, end).
        """
        pid = pid or self.patient()
        names = [programmes] if isinstance(programmes, str) else list(programmes)
        goal_ids = [self.goal(pid, target) for target in goals]
        plan: dict[str, Any] = {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": f"Patient/{pid}"},
            "instantiatesCanonical": [PLANS[n] for n in names],
            "period": {"start": start},
        }
        if goal_ids:
            plan["goal"] = [{"reference": f"Goal/{g}"} for g in goal_ids]
        activities = [(r, True) for r in disable] + [(r, False) for r in enable]
        if activities:
            plan["activity"] = [
                {
                    "detail": {
                        "status": "not-started",
                        "doNotPerform": off,
                        "code": {"coding": [{"system": ALERT_RULES, "code": rule}]},
                    }
                }
                for rule, off in activities
            ]
        if pause:
            period = {"start": pause[0]} | ({"end": pause[1]} if pause[1] else {})
            plan["extension"] = [{"url": PAUSE, "valuePeriod": period}]
        self._ok(self.client.post("/fhir/CarePlan", json=plan), 201)
        return pid

    def post(self, *resources: dict[str, Any]) -> list[dict[str, Any]]:
        """POST each Observation (201 expected); the created resources, ids filled in."""
        out = []
        for resource in resources:
            created = self._ok(self.client.post("/fhir/Observation", json=resource), 201)
            resource["id"] = created["id"]
            out.append(created)
        return out

    def put(self, resource: dict[str, Any], status: int = 200) -> dict[str, Any]:
        """PUT a resource that carries its id."""
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        return self._ok(self.client.put(url, json=resource), status)

    def transaction(self, *resources: dict[str, Any]) -> Any:
        """POST a transaction Bundle of creates; the raw response."""
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": r,
                    "request": {"method": "POST", "url": r["resourceType"]},
                }
                for r in resources
            ],
        }
        return self.client.post("/fhir", json=bundle)

    def flags(self, pid: str, code: str | None = None, **params: str) -> list[dict[str, Any]]:
        """The patient's Flags (optionally of one rule)."""
        query = {"patient": pid, **params} | ({"code": code} if code else {})
        bundle = self._ok(self.client.get("/fhir/Flag", params=query), 200)
        return [
            e["resource"]
            for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") == "match"
        ]

    def flag(self, pid: str, code: str) -> dict[str, Any] | None:
        """The one Flag of a rule for the patient, or None (more than one fails)."""
        found = self.flags(pid, code)
        assert len(found) <= 1, [text(f) for f in found]
        return found[0] if found else None

    def read(self, res_type: str, res_id: str) -> dict[str, Any]:
        """GET one resource."""
        return self._ok(self.client.get(f"/fhir/{res_type}/{res_id}"), 200)

    def alert_service(self) -> AlertService:
        """The AlertService the app attached to its FHIR service."""
        fhir = self.client.app.state.telemon.fhir  # type: ignore[attr-defined]
        for listener in fhir.listeners:
            owner = getattr(listener, "__self__", None)
            if isinstance(owner, AlertService):
                return owner
        raise AssertionError("no AlertService attached")


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for alert tests: open access, alerts on, no background sweep."""
    return Settings(
        database_url=database_url,
        auth="open",
        alerts_enabled=True,
        alert_sweep_interval_seconds=0,
        language="en",  # the assertions read the English alert texts
        profiles_dir=Path(__file__).resolve().parent.parent.parent / "fhir_profiles",
    )


@pytest.fixture
def client(settings: Settings, clock: PinnedClock) -> Iterator[TestClient]:
    """An HTTP client through the ASGI stack, with the alert settings above."""
    with TestClient(create_app(settings, clock=clock), base_url="http://testserver") as c:
        c.headers["Content-Type"] = "application/fhir+json"
        yield c


@pytest.fixture
def api(client: TestClient, clock: PinnedClock) -> Api:
    """The helpers above, with notifications of the attached AlertService recorded."""
    helper = Api(client, clock)
    helper.alert_service().listeners.append(lambda _conn, alert: helper.notified.append(alert))
    return helper
