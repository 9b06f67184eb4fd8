"""Code systems and the canonical concept map (§4, §7.7 of the alert-rules reference)."""

from __future__ import annotations

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
# CAT, CCQ and the Anthonisen items have no confirmed LOINC code (§4, §9.5): local codes.
TELEMON_OBS = "http://telemon.example.org/fhir/CodeSystem/observation-codes"
ALERT_RULES = "http://telemon.example.org/fhir/CodeSystem/alert-rules"

BP_PANEL = "85354-9"
SUPPLEMENTAL_OXYGEN = "266702001"

# (system, code) -> canonical concept.  Vendor variants map onto the same concept.
CONCEPTS: dict[tuple[str, str], str] = {
    (LOINC, "29463-7"): "weight",
    (LOINC, "3141-9"): "weight",
    (LOINC, "8480-6"): "sbp",
    (LOINC, "8460-8"): "sbp",
    (LOINC, "8461-6"): "sbp",
    (LOINC, "8462-4"): "dbp",
    (LOINC, "8454-1"): "dbp",
    (LOINC, "8455-8"): "dbp",
    (LOINC, "8867-4"): "hr",
    (LOINC, "2708-6"): "spo2",
    (LOINC, "59408-5"): "spo2",
    (LOINC, "59417-6"): "spo2",
    (LOINC, "9279-1"): "rr",
    (LOINC, "76528-9"): "rr",
    (LOINC, "8310-5"): "temp",
    (LOINC, "88020-3"): "nyha",
    (LOINC, "19935-6"): "pef",
    (TELEMON_OBS, "cat-total"): "cat",
    (TELEMON_OBS, "ccq-total"): "ccq",
    (TELEMON_OBS, "dyspnoea-vas"): "dyspnoea",
    (TELEMON_OBS, "increased-dyspnoea"): "anthonisen",
    (TELEMON_OBS, "increased-sputum-volume"): "anthonisen",
    (TELEMON_OBS, "increased-sputum-purulence"): "anthonisen",
}

# HF symptom findings (Belgian IG ValueSet HeartFailureSymptoms); concept "symptom".
SYMPTOMS: dict[str, str] = {
    "267036007": "shortness of breath",
    "248548009": "nocturnal dyspnoea",
    "62744007": "orthopnoea",
    "267038008": "oedema",
    "297142003": "foot swelling",
    "84229001": "fatigue",
    "404640003": "dizziness",
    "29857009": "chest pain",
    "80313002": "palpitations",
    "64379006": "reduced appetite",
    "40917007": "confusion",
}

# Symptom severity answers -> ordinal (absent, mild, moderate, severe).
SEVERITY_ORDINAL: dict[str, int] = {
    "2667000": 0,
    "255604002": 1,
    "1255665007": 2,
    "24484000": 3,
}

NYHA_CLASS: dict[str, int] = {
    "420300004": 1,
    "421704003": 2,
    "420913000": 3,
    "422293003": 4,
}

# Canonical unit per concept, shown to clinicians.
CANONICAL_UNIT: dict[str, str] = {
    "weight": "kg",
    "sbp": "mmHg",
    "dbp": "mmHg",
    "hr": "/min",
    "spo2": "%",
    "rr": "/min",
    "temp": "°C",
    "pef": "L/min",
    "nyha": "class",
    "cat": "points",
    "ccq": "points",
    "dyspnoea": "/10",
    "anthonisen": "",
    "symptom": "",
}

LABEL: dict[str, str] = {
    "weight": "Weight",
    "sbp": "SBP",
    "dbp": "DBP",
    "hr": "HR",
    "spo2": "SpO2",
    "rr": "RR",
    "temp": "Temperature",
    "pef": "PEF",
    "nyha": "NYHA class",
    "cat": "CAT",
    "ccq": "CCQ",
    "dyspnoea": "Dyspnoea",
}
