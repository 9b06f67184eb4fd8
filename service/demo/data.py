"""Demo data (``telemon demo``): three patients with weeks of home measurements.

* **Hendrik Jansen** (heart failure): daily weight, blood pressure, heart rate and SpO2. In the last
  days he decompensates: about +2.8 kg in three days, heart rate up, SpO2 a little down.
* **Anna de Vries** (COPD): daily-ish SpO2 and pulse, respiratory rate and temperature now and
  then (what the COPD rules read). In the last days she has an exacerbation:
  SpO2 5-6 points below her baseline, breathing faster, pulse up, a slight fever.
* **Willem Bakker** (heart failure and COPD): everything daily, and stable — the contrast.

And one clinician, **dr. Eva Visser** (a ``Practitioner`` with UZI number
:data:`CLINICIAN_UZI`), who logs in to the dashboard (``/dashboard``) with that number.

Each is enrolled in the programmes of their conditions (a ``CarePlan`` instantiating
``PlanDefinition/heart-failure`` and/or ``PlanDefinition/copd``) before the measurements are
stored, so the alert rules run as they arrive; the summary lists the alerts left open.

Every resource has an identifier (Patient: BSN; Device: serial; Observation: patient, code and
local day) and is created with a conditional create, so loading the demo twice on the same day
creates nothing the second time. The values are drawn from a random generator seeded per patient,
so the same seed and day give the same data. Measurements are taken on local mornings
(``settings.timezone``, Europe/Amsterdam by default) and never lie after ``now``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from service.alerts.episodes import FLAG_PRIORITY
from service.auth.identity import UZI_SYSTEM
from service.bulk.importer import identifier_criteria
from service.core import concepts
from service.fhir import bundles
from service.fhir.service import FhirService
from service.validation import BSN_SYSTEM

DEVICE_SYSTEM = "urn:telemon:demo:device"
OBSERVATION_SYSTEM = "urn:telemon:demo:observation"
_VITAL_SIGNS = {
    "coding": [
        {
            "system": concepts.OBSERVATION_CATEGORY,
            "code": "vital-signs",
            "display": "Vital Signs",
        }
    ]
}
_SURVEY = {
    "coding": [{"system": concepts.OBSERVATION_CATEGORY, "code": "survey", "display": "Survey"}]
}
#: The demo clinician's UZI number: the simulated dashboard login accepts it (test/demo only).
CLINICIAN_UZI = "900012345"
# The last morning measurement is done by then; before it, "today" has no data yet.
_MORNING_DONE = time(8, 30)
_EPISODE_DAYS = 4  # the decompensation / exacerbation covers the last four days
_BUNDLE_SIZE = 500


@dataclass(frozen=True, slots=True)
class _Person:
    key: str
    bsn: str
    given: str
    family: str
    gender: str
    birth_date: str
    conditions: tuple[str, ...]
    devices: tuple[tuple[str, str, str], ...]  # (kind, display name, model)


_PEOPLE = (
    _Person(
        "hf",
        "999990019",
        "Hendrik",
        "Jansen",
        "male",
        "1947-04-18",
        ("heart failure",),
        (("scale", "Weegschaal", "BodyScale 300"), ("bp", "Bloeddrukmeter", "BPM 700")),
    ),
    _Person(
        "copd",
        "999991115",
        "Anna",
        "de Vries",
        "female",
        "1953-11-02",
        ("COPD",),
        (("oximeter", "Saturatiemeter", "OxiCheck 2"),),
    ),
    _Person(
        "hfcopd",
        "999995522",
        "Willem",
        "Bakker",
        "male",
        "1941-07-25",
        ("heart failure", "COPD"),
        (
            ("scale", "Weegschaal", "BodyScale 300"),
            ("bp", "Bloeddrukmeter", "BPM 700"),
            ("oximeter", "Saturatiemeter", "OxiCheck 2"),
        ),
    ),
)


@dataclass(slots=True)
class DemoPatient:
    """One demo patient as stored: server ids and what the data shows."""

    name: str
    patient_id: str
    bsn: str
    conditions: tuple[str, ...]
    story: str
    device_ids: dict[str, str] = field(default_factory=dict)
    observations: int = 0
    alerts: list[str] = field(default_factory=list)  # open alerts, "RULE (colour)", reddest first


@dataclass(slots=True)
class DemoSummary:
    """What :func:`load_demo` wrote (``created``) and found already present (``skipped``)."""

    patients: list[DemoPatient]
    clinician_name: str = ""
    clinician_uzi: str = CLINICIAN_UZI
    created: int = 0
    skipped: int = 0
    first_day: date | None = None
    last_day: date | None = None


def load_demo(
    service: FhirService, *, now: datetime | None = None, seed: int = 7, weeks: int = 8
) -> DemoSummary:
    """Create the demo patients, their devices and ``weeks`` weeks of measurements.

    ``now`` (timezone-aware; default: the service's clock, the real time in ``telemon demo``)
    fixes the last measurement day: that day when its morning measurements are done (08:30
    local), else the day before. It must not lie ahead of the service's clock, or the server
    rejects the measurements as future ones. Idempotent for the same last day.
    """
    now = now or service.clock()
    local_now = now.astimezone(service.zone)
    last_day = local_now.date()
    if local_now.time() < _MORNING_DONE:
        last_day -= timedelta(days=1)
    days = [last_day - timedelta(days=n) for n in range(weeks * 7 - 1, -1, -1)]
    summary = DemoSummary([], first_day=days[0], last_day=last_day)
    summary.clinician_name = _store_clinician(service, summary)
    for person in _PEOPLE:
        patient, devices = _store_people(service, person, summary, days[0])
        # seeded per patient: one series never shifts another
        readings = list(_measurements(person, days, f"{seed}:{person.key}", now, service.zone))
        resources = [_observation(person, patient, devices, reading) for reading in readings]
        for start in range(0, len(resources), _BUNDLE_SIZE):
            _store(service, resources[start : start + _BUNDLE_SIZE], summary)
        summary.patients.append(
            DemoPatient(
                f"{person.given} {person.family}",
                patient,
                person.bsn,
                person.conditions,
                _STORIES[person.key],
                devices,
                len(resources),
            )
        )
    for stored in summary.patients:
        stored.alerts = _open_alerts(service, stored.patient_id)
    return summary


PLAN_BASE = "http://telemon.example.org/fhir/PlanDefinition"
#: Condition → the id of its programme's PlanDefinition (served read-only from fhir_profiles/).
PROGRAMMES = {"heart failure": "heart-failure", "COPD": "copd"}
CARE_PLAN_SYSTEM = "urn:telemon:demo:careplan"

_STORIES = {
    "hf": "decompensation in the last days: weight about +3 kg in 3 days, pulse up, SpO2 down",
    "copd": "exacerbation in the last days: SpO2 5-6 points below baseline, breathing faster",
    "hfcopd": "stable: the contrast for the other two",
}


# -- storing ---------------------------------------------------------------------------------


def _entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
    criteria = identifier_criteria(resource)
    if criteria:
        request["ifNoneExist"] = criteria
    entry: dict[str, Any] = {"resource": resource, "request": request}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def _store(
    service: FhirService, resources: list[dict[str, Any]], summary: DemoSummary
) -> list[str]:
    """POST ``resources`` in one transaction; returns their ``Type/id``s."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [_entry(r) for r in resources],
    }
    return _run(service, bundle, summary)


def _run(service: FhirService, bundle: dict[str, Any], summary: DemoSummary) -> list[str]:
    response = bundles.process(service, bundle)
    refs = []
    for entry in response["entry"]:
        if entry["response"]["status"].startswith("201"):
            summary.created += 1
        else:
            summary.skipped += 1
        refs.append(entry["response"]["location"].split("/_history/")[0])
    return refs


def _store_clinician(service: FhirService, summary: DemoSummary) -> str:
    """The demo clinician, a Practitioner with a UZI number; returns the display name."""
    practitioner = {
        "resourceType": "Practitioner",
        "identifier": [{"system": UZI_SYSTEM, "value": CLINICIAN_UZI}],
        "active": True,
        "name": [{"use": "official", "prefix": ["dr."], "given": ["Eva"], "family": "Visser"}],
    }
    _store(service, [practitioner], summary)
    return "dr. Eva Visser"


def _care_plan(person: _Person, patient_ref: str, start: date) -> dict[str, Any]:
    """Enrolment in the person's programmes, so the alert rules run on their measurements."""
    plans = [f"{PLAN_BASE}/{PROGRAMMES[condition]}" for condition in person.conditions]
    return {
        "resourceType": "CarePlan",
        "identifier": [{"system": CARE_PLAN_SYSTEM, "value": person.key}],
        "status": "active",
        "intent": "plan",
        "title": "Telemonitoring",
        "subject": {"reference": patient_ref},
        "instantiatesCanonical": plans,
        "period": {"start": start.isoformat()},
    }


def _store_people(
    service: FhirService, person: _Person, summary: DemoSummary, start: date
) -> tuple[str, dict[str, str]]:
    """The Patient, its Devices and its programme CarePlan in one transaction.

    Returns the patient id and the device ids by kind. The CarePlan comes before the
    measurements, so that their alerts are raised as they are stored.
    """
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": BSN_SYSTEM, "value": person.bsn}],
        "active": True,
        "name": [{"use": "official", "family": person.family, "given": [person.given]}],
        "gender": person.gender,
        "birthDate": person.birth_date,
    }
    entries = [_entry(patient, f"urn:uuid:demo-patient-{person.key}")]
    for kind, display, model in person.devices:
        device = {
            "resourceType": "Device",
            "identifier": [{"system": DEVICE_SYSTEM, "value": f"{person.key}-{kind}"}],
            "status": "active",
            "manufacturer": "Telemon Demo Devices",
            "deviceName": [{"name": display, "type": "user-friendly-name"}],
            "modelNumber": model,
            "type": {"text": display},
            "patient": {"reference": f"urn:uuid:demo-patient-{person.key}"},
        }
        entries.append(_entry(device))
    entries.append(_entry(_care_plan(person, f"urn:uuid:demo-patient-{person.key}", start)))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    refs = _run(service, bundle, summary)
    patient_id = refs[0].split("/")[1]
    devices = {
        kind: ref.split("/")[1]
        for (kind, _, _), ref in zip(person.devices, refs[1:-1], strict=True)
    }
    return patient_id, devices


def _open_alerts(service: FhirService, patient_id: str) -> list[str]:
    """The patient's active alert Flags as ``RULE (colour)``, reddest first (PH, PM, PL)."""
    found = []
    for match in service.search("Flag", [("patient", patient_id), ("status", "active")]).matches:
        flag = orjson.loads(match.content or "{}")
        priorities = [e for e in flag.get("extension", []) if e.get("url") == FLAG_PRIORITY]
        if not priorities:
            continue  # a Flag some client wrote, not one of telemon's alerts
        concept = priorities[0]["valueCodeableConcept"]
        rank = ("PH", "PM", "PL").index(concept["coding"][0]["code"])
        found.append((rank, flag["code"]["coding"][0]["code"], concept["text"]))
    return [f"{rule} ({colour})" for _, rule, colour in sorted(found)]


# -- the measurements ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reading:
    kind: str  # weight, bp, hr, spo2, rr, temp
    day: date
    at: datetime
    values: tuple[float, ...]
    device: str | None


# What each kind of reading is sent as: the concept table's codes (the ones home devices send)
# and canonical unit, and the Dutch text of the device's app.
_CODES: dict[str, tuple[tuple[str, ...], str, str]] = {
    # kind: (LOINC codes, UCUM unit, text)
    "weight": (("29463-7",), concepts.WEIGHT.unit, "Gewicht"),
    "bp": (("85354-9",), concepts.SBP.unit, "Bloeddruk"),
    "hr": (("8867-4",), concepts.HEART_RATE.unit, "Hartslag"),
    # a pulse oximeter: the generic code and the "by pulse oximetry" one, as nl-core's example
    "spo2": (("2708-6", "59408-5"), concepts.SPO2.unit, "Zuurstofsaturatie"),
    "rr": (("9279-1",), concepts.RESP_RATE.unit, "Ademfrequentie"),
    "temp": (("8310-5",), concepts.TEMPERATURE.unit, "Temperatuur"),
    "cat": (("cat-total",), concepts.CAT.unit, "CAT-score"),
}


def _coding(code: str) -> dict[str, str]:
    """The concept table's LOINC (else telemon) coding for ``code`` (its display included)."""
    found = concepts.entry(concepts.LOINC, code) or concepts.entry(concepts.TELEMON_OBS, code)
    if found is None:
        raise KeyError(f"{code} is not in the concept table")
    return found.coding()


def _noise(rng: random.Random, sd: float) -> float:
    """Gaussian noise clipped at two standard deviations, so the scripted episodes stay visible."""
    return max(-2 * sd, min(2 * sd, rng.gauss(0, sd)))


# Per day into the episode (index 1..4; 0 = no episode): how far each vital has moved.
# The weight rises slowly at first and then by 2.5 kg in a day, so that the first day it rises
# by more than 1 kg is also the first day it is more than 2 kg above the days before: the
# decompensation opens as HF-WT-3D (with HF-WT-1D as a reason), whatever the noise.
_WEIGHT_UP = (0.0, 0.2, 0.4, 2.9, 3.3)  # kg
_SPO2_DOWN = {"decompensation": (0, 1, 1, 2, 3), "exacerbation": (0, 2, 4, 5, 6)}
_RR_UP = (0, 4, 7, 9, 10)  # /min, exacerbation
_FEVER = (0.0, 0.2, 0.6, 1.0, 1.3)  # Cel, exacerbation
_HR_UP_PER_DAY = {"decompensation": 8.0, "exacerbation": 5.0}


def _measurements(
    person: _Person, days: list[date], seed: str, now: datetime, zone: ZoneInfo
) -> Iterator[_Reading]:
    """The person's readings, oldest first (only those at or before ``now``).

    Every random draw comes from a generator seeded with ``seed`` and the day's place counted
    back from the last day, and the schedules (breathing rate twice a week, temperature weekly)
    count back from it too: the series, and so the alerts they raise, are the same whatever
    the calendar date or the time of day the demo is loaded at.
    """
    hf = "heart failure" in person.conditions
    copd = "COPD" in person.conditions
    episode = {"hf": "decompensation", "copd": "exacerbation"}.get(person.key)
    base_weight = {"hf": 84.0, "copd": 61.0, "hfcopd": 77.0}[person.key]
    base_spo2 = 93.0 if copd else 96.0
    base_hr = {"hf": 68.0, "copd": 78.0, "hfcopd": 72.0}[person.key]
    drift = random.Random(f"{seed}:drift").uniform(-0.02, 0.02)  # kg per day over the weeks
    for index, day in enumerate(days):
        back = len(days) - 1 - index  # 0: the last day
        rng = random.Random(f"{seed}:{back}")
        e = max(0, _EPISODE_DAYS - back) if episode else 0
        if back >= 10 and rng.random() < 0.04:
            continue  # a forgotten morning now and then, but never near the episode
        wake = datetime.combine(day, time(7, 0), zone)
        wake += timedelta(minutes=rng.randint(0, 40))
        plan: list[tuple[str, int, tuple[float, ...], str | None]] = []  # minutes after waking
        add = plan.append
        if hf:
            kg = base_weight + drift * index + 0.2 * math.sin(index * 2 * math.pi / 21)
            if episode == "decompensation":
                kg += _WEIGHT_UP[e]
            add(("weight", 0, (round(kg + _noise(rng, 0.15), 1),), "scale"))
            sbp = 128 - (2 * e if episode == "decompensation" else 0) + _noise(rng, 6)
            add(("bp", 5, (round(sbp), round(78 + _noise(rng, 4))), "bp"))
        hr = round(base_hr + _HR_UP_PER_DAY.get(episode or "", 0.0) * e + _noise(rng, 3))
        if hf:
            add(("hr", 5, (hr,), "bp"))
        if hf or e > 0 or rng.random() < 0.85:  # COPD: SpO2 and pulse on most days
            drop = _SPO2_DOWN[episode][e] if episode else 0
            add(("spo2", 8, (round(min(99.0, base_spo2 - drop + _noise(rng, 0.8))),), "oximeter"))
            if not hf:
                add(("hr", 8, (hr,), "oximeter"))
        if copd and (e > 0 or back % 7 in (2, 5)):  # twice a week, daily in an episode
            rr_up = _RR_UP[e] if episode == "exacerbation" else 0
            add(("rr", 10, (round(16 + rr_up + _noise(rng, 1.5)),), None))
        if copd and (e > 0 or back % 7 == 4):
            fever = _FEVER[e] if episode == "exacerbation" else 0.0
            add(("temp", 12, (round(36.8 + fever + _noise(rng, 0.2), 1),), None))
        if copd and back % 7 == 6:  # the weekly CAT questionnaire, filled in after the vitals
            add(("cat", 20, (14 + back // 7 % 2,), None))  # steady: no CAT rise
        for kind, minutes, values, device in plan:
            at = wake + timedelta(minutes=minutes)
            if at <= now:
                yield _Reading(kind, day, at, values, device)


def _observation(
    person: _Person,
    patient_id: str,
    devices: dict[str, str],
    reading: _Reading,
) -> dict[str, Any]:
    codes, unit, text = _CODES[reading.kind]
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [
            {
                "system": OBSERVATION_SYSTEM,
                "value": f"{person.key}-{reading.kind}-{reading.day.isoformat()}",
            }
        ],
        "status": "final",
        "category": [_SURVEY if reading.kind == "cat" else _VITAL_SIGNS],
        "code": {"coding": [_coding(c) for c in codes], "text": text},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": reading.at.isoformat(timespec="seconds"),
    }
    if reading.kind == "bp":
        sbp, dbp = reading.values
        obs["component"] = [
            _component("8480-6", sbp, unit),
            _component("8462-4", dbp, unit),
        ]
    else:
        obs["valueQuantity"] = _quantity(reading.values[0], unit)
    if reading.device and reading.device in devices:
        obs["device"] = {"reference": f"Device/{devices[reading.device]}"}
    return obs


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": concepts.UCUM, "code": unit}


def _component(code: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "code": {"coding": [_coding(code)]},
        "valueQuantity": _quantity(value, unit),
    }


#: For callers that want to show a series: the LOINC code of each measurement kind.
LOINC_CODES: dict[str, str] = {kind: codes[0] for kind, (codes, _, _) in _CODES.items()}
