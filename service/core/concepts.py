"""The measurement concepts telemon knows: one table for validation, alerts, charts and the demo.

A *concept* is what a measurement means to the alert rules (``weight``, ``sbp``, ``spo2`` …). Each
has its canonical UCUM unit, the UCUM units it is accepted in (with the conversion to the
canonical one), its plausibility range, and every code that means it, each with where that code
comes from. A *panel* (the blood-pressure panel) is an Observation whose components carry
concepts.

Everything that needs to know which codes mean what reads this table: the profile validator
(through the ValueSets in ``fhir_profiles/``, which :mod:`service.validation.value_sets` writes
from it and a test keeps equal to it; and the unit conversions), the alert engine (mapping an
Observation to measurements, Goals to thresholds), the dashboard (its charts and their units) and
the demo (the codes it sends). ``docs/measurements.md`` lists the table with its sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
#: CAT, CCQ, dyspnoea VAS and the Anthonisen items have no confirmed LOINC code
#: (docs/alerts/engine.md#codes): local codes.
TELEMON_OBS = "http://telemon.example.org/fhir/CodeSystem/observation-codes"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# Where the codes come from (the sources are listed in full in docs/measurements.md).
R4_VITALS = "FHIR R4 vital signs: ValueSet observation-vitalsignresult and the profile's code"
HL7_VALIDATOR = (
    "HL7 FHIR validator: the LOINC codes it reads as this vital sign "
    "(hapifhir/org.hl7.fhir.core, BasePolicyAdvisorForFullValidation)"
)
R4_EXAMPLE = "FHIR R4 example"
SYNTHEA = "Synthea R4 (SMART generated-sample-data: every blood pressure, one oral temperature)"
NL_CORE = "Nictiz nl-core (zib2020) example"
R6_HEART_RATE = "FHIR R6 ballot ValueSet observation-vitalsign-heartrate (tx.fhir.org, LOINC 2.81)"
ISIK_TEMP = "ISiK core temperature LOINC ValueSet (tx.fhir.org expansion, LOINC 2.81)"
ECQM = "eCQM value set (VSAC)"
ECQM_TEMP = f"{ECQM} Body temperature"
ALERT_REFERENCE = "Belgian HF IG LOINC overview (docs/alerts/sources.md#belgian-hf-care-path)"
LOCAL = "telemon local code (no confirmed LOINC code, docs/alerts/engine.md#codes)"
HF_SYMPTOMS = (
    "Belgian HF IG ValueSet HeartFailureSymptoms (docs/alerts/sources.md#belgian-hf-care-path)"
)
NYHA_SOURCE = "LOINC 88020-3 NYHA functional capacity (docs/alerts/sources.md#codes-and-units)"
PEF_SOURCE = "LOINC 19935-6 (HealthKit → LOINC ConceptMap, docs/alerts/sources.md#codes-and-units)"


@dataclass(frozen=True, slots=True)
class Code:
    """One code that means a concept, with its display and where it comes from."""

    system: str
    code: str
    display: str
    source: str

    @property
    def key(self) -> tuple[str, str]:
        """(system, code), as found in a Coding."""
        return self.system, self.code

    def coding(self) -> dict[str, str]:
        """A FHIR Coding with this code and its display."""
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True, slots=True)
class Unit:
    """A UCUM unit a concept is accepted in: canonical = value * factor + offset."""

    code: str
    display: str
    factor: float = 1.0
    offset: float = 0.0

    def to_canonical(self, value: float) -> float:
        """``value`` in this unit, converted to the concept's canonical unit."""
        return value * self.factor + self.offset


@dataclass(frozen=True, slots=True)
class Concept:
    """A measurement the alert rules know."""

    key: str  # what the rules call it: weight, sbp, dbp, hr, spo2, rr, temp, …
    label: str  # short name in alert texts and chart series
    title: str  # full name (ValueSets, documentation, the dashboard's lists)
    unit: str  # canonical unit, UCUM ("" when the value is coded)
    shown_unit: str  # the canonical unit as clinicians read it
    codes: tuple[Code, ...]
    units: tuple[Unit, ...] = ()
    plausible: tuple[float, float] | None = None  # inclusive, in the canonical unit
    #: Non-UCUM spellings read as a UCUM unit, with a warning (docs/alerts/engine.md#units).
    unit_aliases: tuple[tuple[str, str], ...] = ()
    value: str = "Quantity"  # Quantity, CodeableConcept or boolean
    #: The telemon StructureDefinition that validates it (vital signs only).
    profile: str | None = None

    def unit_of(self, code: str) -> Unit | None:
        """The accepted unit with UCUM ``code``, if any."""
        return next((u for u in self.units if u.code == code), None)

    @property
    def vital_sign(self) -> bool:
        """One of the home vital signs the FHIR vital-signs profiles define."""
        return self.profile is not None


@dataclass(frozen=True, slots=True)
class Panel:
    """An Observation whose components carry the measurements (the blood-pressure panel)."""

    key: str
    title: str
    codes: tuple[Code, ...]
    components: tuple[str, ...]  # the concepts read from its components
    profile: str


@dataclass(frozen=True, slots=True)
class Chart:
    """One trend chart of the dashboard's patient page: the concepts it draws."""

    key: str
    title: str
    concepts: tuple[str, ...]
    always: bool  # shown even without data (else only with data or an alert)


def _loinc(code: str, display: str, *sources: str) -> Code:
    return Code(LOINC, code, display, "; ".join(sources))


_MM_HG = (Unit("mm[Hg]", "millimeter of mercury"), Unit("kPa", "kilopascal", 7.50062))
_PER_MINUTE = Unit("/min", "per minute")
_ONE_PER_MINUTE = Unit("1/min", "per minute")
_SCORE = (Unit("{score}", "score"), Unit("1", "unity"), Unit("", "no unit"))

WEIGHT = Concept(
    "weight",
    "Weight",
    "Body weight",
    "kg",
    "kg",
    (
        _loinc("29463-7", "Body weight", R4_VITALS, HL7_VALIDATOR),
        _loinc(
            "3141-9",
            "Body weight Measured",
            f"{R4_EXAMPLE} observation-example (second coding)",
            HL7_VALIDATOR,
            ALERT_REFERENCE,
        ),
        _loinc(
            "8350-1",
            "Body weight Measured --with clothes",
            HL7_VALIDATOR,
            f"{ECQM} Weight 2.16.840.1.113883.3.464.1003.121.12.1015",
        ),
        _loinc(
            "8351-9",
            "Body weight Measured --without clothes",
            HL7_VALIDATOR,
            f"{ECQM} Weight 2.16.840.1.113883.3.464.1003.121.12.1015",
        ),
    ),
    (
        Unit("kg", "kilogram"),
        Unit("g", "gram", 0.001),
        Unit("[lb_av]", "pound", 0.45359237),
    ),
    (20.0, 350.0),
    unit_aliases=(("lb", "[lb_av]"), ("lbs", "[lb_av]")),
    profile="telemon-bodyweight",
)
SBP = Concept(
    "sbp",
    "SBP",
    "Systolic blood pressure",
    "mm[Hg]",
    "mmHg",
    (
        _loinc("8480-6", "Systolic blood pressure", R4_VITALS, HL7_VALIDATOR),
        _loinc(
            "8459-0",
            "Systolic blood pressure--sitting",
            HL7_VALIDATOR,
            f"{ECQM} Blood Pressure Readings 2.16.840.1.113883.3.464.1003.104.12.1012",
        ),
        _loinc("8460-8", "Systolic blood pressure--standing", ALERT_REFERENCE),
        _loinc("8461-6", "Systolic blood pressure--supine", ALERT_REFERENCE),
        _loinc("76534-7", "Systolic blood pressure by Noninvasive", HL7_VALIDATOR),
    ),
    _MM_HG,
    (50.0, 300.0),
    profile="telemon-bp-systolic",
)
DBP = Concept(
    "dbp",
    "DBP",
    "Diastolic blood pressure",
    "mm[Hg]",
    "mmHg",
    (
        _loinc("8462-4", "Diastolic blood pressure", R4_VITALS),
        _loinc(
            "8453-3",
            "Diastolic blood pressure--sitting",
            f"{ECQM} Blood Pressure Readings 2.16.840.1.113883.3.464.1003.104.12.1012",
        ),
        _loinc("8454-1", "Diastolic blood pressure--standing", ALERT_REFERENCE),
        _loinc("8455-8", "Diastolic blood pressure--supine", ALERT_REFERENCE),
        _loinc(
            "76535-4",
            "Diastolic blood pressure by Noninvasive",
            "LOINC: the diastolic of the pair 76534-7/76535-4, with it in public EHR vital-sign "
            "code lists (the HL7 validator lists only 76534-7)",
        ),
    ),
    _MM_HG,
    (20.0, 200.0),
    profile="telemon-bp-diastolic",
)
HEART_RATE = Concept(
    "hr",
    "HR",
    "Heart rate",
    "/min",
    "/min",
    (
        _loinc("8867-4", "Heart rate", R4_VITALS, HL7_VALIDATOR),
        _loinc(
            "8889-8",
            "Heart rate by Pulse oximetry",
            HL7_VALIDATOR,
            "pulse oximeters send it with their SpO2 (device integrations in public code)",
        ),
        _loinc(
            "8893-0",
            "Heart rate Peripheral artery by palpation",
            f"{NL_CORE} PulseRate (the pulse of home blood-pressure monitors)",
            HL7_VALIDATOR,
        ),
        _loinc("40443-4", "Heart rate --resting", R6_HEART_RATE, HL7_VALIDATOR),
        _loinc("68999-2", "Heart rate --supine", R6_HEART_RATE, HL7_VALIDATOR),
        _loinc("69000-8", "Heart rate --sitting", R6_HEART_RATE, HL7_VALIDATOR),
        _loinc("69001-6", "Heart rate --standing", R6_HEART_RATE),
    ),
    (_PER_MINUTE, Unit("{beats}/min", "beats per minute"), _ONE_PER_MINUTE),
    (20.0, 250.0),
    profile="telemon-heartrate",
)
SPO2 = Concept(
    "spo2",
    "SpO2",
    "Oxygen saturation",
    "%",
    "%",
    (
        _loinc("2708-6", "Oxygen saturation in Arterial blood", R4_VITALS, HL7_VALIDATOR),
        _loinc(
            "59408-5",
            "Oxygen saturation in Arterial blood by Pulse oximetry",
            f"{R4_EXAMPLE} observation-example-satO2 (second coding)",
            f"{NL_CORE} O2Saturation",
            HL7_VALIDATOR,
        ),
        _loinc(
            "59417-6",
            "Oxygen saturation in Arterial blood by Pulse oximetry --resting",
            ALERT_REFERENCE,
            HL7_VALIDATOR,
        ),
        _loinc("2710-2", "Oxygen saturation in Capillary blood by Oximetry", HL7_VALIDATOR),
    ),
    # A fraction (unit 1, 0-1) is read as a percentage.
    (Unit("%", "percent"), Unit("1", "fraction (0-1)", 100.0)),
    (50.0, 100.0),
    profile="telemon-oxygensat",
)
RESP_RATE = Concept(
    "rr",
    "RR",
    "Respiratory rate",
    "/min",
    "/min",
    (
        _loinc("9279-1", "Respiratory rate", R4_VITALS, HL7_VALIDATOR),
        _loinc("76528-9", "Breath rate spontaneous", ALERT_REFERENCE),
    ),
    (_PER_MINUTE, Unit("{breaths}/min", "breaths per minute"), _ONE_PER_MINUTE),
    (4.0, 60.0),
    profile="telemon-resprate",
)
TEMPERATURE = Concept(
    "temp",
    "Temperature",
    "Body temperature",
    "Cel",
    "°C",
    (
        _loinc("8310-5", "Body temperature", R4_VITALS, HL7_VALIDATOR),
        _loinc(
            "8331-1",
            "Oral temperature",
            f"{R4_EXAMPLE} observation-example-f202-temperature (second coding)",
            SYNTHEA,
            HL7_VALIDATOR,
        ),
        _loinc("8332-9", "Rectal temperature", HL7_VALIDATOR, ISIK_TEMP),
        _loinc("8333-7", "Tympanic membrane temperature", HL7_VALIDATOR, ISIK_TEMP),
        _loinc("8328-7", "Axillary temperature", HL7_VALIDATOR, ISIK_TEMP),
        _loinc("75539-7", "Body temperature - Temporal artery", HL7_VALIDATOR, ECQM_TEMP),
        _loinc("76011-6", "Ear temperature", HL7_VALIDATOR, ECQM_TEMP),
        _loinc("8329-5", "Body temperature - Core", HL7_VALIDATOR),
    ),
    (Unit("Cel", "degree Celsius"), Unit("[degF]", "degree Fahrenheit", 5 / 9, -32 * 5 / 9)),
    (30.0, 43.0),
    profile="telemon-bodytemp",
)
PEF = Concept(
    "pef",
    "PEF",
    "Peak expiratory flow",
    "L/min",
    "L/min",
    (_loinc("19935-6", "Peak expiratory flow rate Respiratory system airway", PEF_SOURCE),),
    (Unit("L/min", "liter per minute"),),
    (30.0, 1000.0),
)
NYHA = Concept(
    "nyha",
    "NYHA class",
    "NYHA functional class",
    "",
    "class",
    (_loinc("88020-3", "NYHA functional capacity", NYHA_SOURCE),),
    plausible=(1.0, 4.0),
    value="CodeableConcept",
)
CAT = Concept(
    "cat",
    "CAT",
    "COPD Assessment Test score",
    "{score}",
    "points",
    (Code(TELEMON_OBS, "cat-total", "CAT total score", LOCAL),),
    _SCORE,
    (0.0, 40.0),
)
CCQ = Concept(
    "ccq",
    "CCQ",
    "Clinical COPD Questionnaire score",
    "{score}",
    "points",
    (Code(TELEMON_OBS, "ccq-total", "CCQ total score", LOCAL),),
    _SCORE,
    (0.0, 6.0),
)
DYSPNOEA = Concept(
    "dyspnoea",
    "Dyspnoea",
    "Dyspnoea (VAS)",
    "{score}",
    "/10",
    (Code(TELEMON_OBS, "dyspnoea-vas", "Dyspnoea visual analogue scale", LOCAL),),
    _SCORE,
    (0.0, 10.0),
)
ANTHONISEN = Concept(
    "anthonisen",
    "Anthonisen",
    "Anthonisen criteria",
    "",
    "",
    (
        Code(TELEMON_OBS, "increased-dyspnoea", "Increased dyspnoea", LOCAL),
        Code(TELEMON_OBS, "increased-sputum-volume", "Increased sputum volume", LOCAL),
        Code(TELEMON_OBS, "increased-sputum-purulence", "Increased sputum purulence", LOCAL),
    ),
    value="boolean",
)
SYMPTOM = Concept(
    "symptom",
    "Symptom",
    "Heart-failure symptom",
    "",
    "",
    tuple(
        Code(SNOMED, code, name, HF_SYMPTOMS)
        for code, name in (
            ("267036007", "shortness of breath"),
            ("248548009", "nocturnal dyspnoea"),
            ("62744007", "orthopnoea"),
            ("267038008", "oedema"),
            ("297142003", "foot swelling"),
            ("84229001", "fatigue"),
            ("404640003", "dizziness"),
            ("29857009", "chest pain"),
            ("80313002", "palpitations"),
            ("64379006", "reduced appetite"),
            ("40917007", "confusion"),
        )
    ),
    value="CodeableConcept",
)

#: Every concept, the six home vital signs first.
CONCEPTS: tuple[Concept, ...] = (
    WEIGHT,
    SBP,
    DBP,
    HEART_RATE,
    SPO2,
    RESP_RATE,
    TEMPERATURE,
    PEF,
    NYHA,
    CAT,
    CCQ,
    DYSPNOEA,
    ANTHONISEN,
    SYMPTOM,
)
BLOOD_PRESSURE = Panel(
    "bp",
    "Blood pressure",
    (
        _loinc(
            "85354-9", "Blood pressure panel with all children optional", R4_VITALS, HL7_VALIDATOR
        ),
        _loinc("55284-4", "Blood pressure systolic and diastolic", SYNTHEA, HL7_VALIDATOR),
        _loinc("35094-2", "Blood pressure panel", HL7_VALIDATOR),
    ),
    ("sbp", "dbp", "hr"),
    profile="telemon-bloodpressure",
)
PANELS: tuple[Panel, ...] = (BLOOD_PRESSURE,)

#: The patient page's trend charts, in order.
CHARTS: tuple[Chart, ...] = (
    Chart("weight", "Weight", ("weight",), True),
    # Systolic and diastolic apart: each limit is drawn over the one series it applies to.
    Chart("sbp", "Systolic blood pressure", ("sbp",), True),
    Chart("dbp", "Diastolic blood pressure", ("dbp",), True),
    Chart("hr", "Heart rate", ("hr",), True),
    Chart("spo2", "SpO2", ("spo2",), True),
    Chart("rr", "Respiratory rate", ("rr",), False),
    Chart("temp", "Temperature", ("temp",), False),
    Chart("cat", "CAT score", ("cat",), True),
)

BY_KEY: dict[str, Concept] = {c.key: c for c in CONCEPTS}
_BY_CODE: dict[tuple[str, str], Concept] = {code.key: c for c in CONCEPTS for code in c.codes}
_PANEL_BY_CODE: dict[tuple[str, str], Panel] = {code.key: p for p in PANELS for code in p.codes}
_CODES: dict[tuple[str, str], Code] = {
    code.key: code for owners in (CONCEPTS, PANELS) for owner in owners for code in owner.codes
}

#: UCUM conversions to a canonical unit: (unit, canonical) → (factor, offset).
CONVERSIONS: dict[tuple[str, str], tuple[float, float]] = {
    (u.code, c.unit): (u.factor, u.offset) for c in CONCEPTS for u in c.units if u.code != c.unit
}


def codings(concept: Any) -> Iterator[tuple[str, str]]:
    """The (system, code) pairs of a CodeableConcept's JSON (nothing for anything else)."""
    if not isinstance(concept, dict):
        return
    found = concept.get("coding")
    for coding in found if isinstance(found, list) else ():
        if isinstance(coding, dict):
            yield str(coding.get("system", "")), str(coding.get("code", ""))


def concept_of(code: Any) -> tuple[Concept, str] | None:
    """The concept a CodeableConcept's JSON means, and the code that said so (first match)."""
    for key in codings(code):
        found = _BY_CODE.get(key)
        if found is not None:
            return found, key[1]
    return None


def panel_of(code: Any) -> Panel | None:
    """The panel a CodeableConcept's JSON names, if it names one."""
    for key in codings(code):
        found = _PANEL_BY_CODE.get(key)
        if found is not None:
            return found
    return None


def concept_by_code(system: str, code: str) -> Concept | None:
    """The concept of one (system, code)."""
    return _BY_CODE.get((system, code))


def entry(system: str, code: str) -> Code | None:
    """The table's entry for one (system, code) (a concept's or a panel's)."""
    return _CODES.get((system, code))


def is_vital_sign(resource: dict[str, Any]) -> bool:
    """Whether an Observation's JSON is in the category ``vital-signs``."""
    categories = resource.get("category")
    return any(
        key == (OBSERVATION_CATEGORY, "vital-signs")
        for category in (categories if isinstance(categories, list) else ())
        for key in codings(category)
    )


#: SNOMED code → name of the heart-failure symptoms.
SYMPTOM_NAMES: dict[str, str] = {c.code: c.display for c in SYMPTOM.codes}


def vital_signs() -> Iterable[Concept]:
    """The home vital signs (the concepts a telemon profile validates)."""
    return (c for c in CONCEPTS if c.vital_sign)
