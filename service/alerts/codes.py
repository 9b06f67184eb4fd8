"""Answer codes the rules read, and the alert-rule code system (docs/alerts/engine.md#codes).

Which codes mean which measurement (weight, SpO2, the HF symptoms …) is the concept table's
(:mod:`service.core.concepts`); this module holds the coded *answers* (severity, NYHA class) and
context codes.
"""

from __future__ import annotations

ALERT_RULES = "http://telemon.example.org/fhir/CodeSystem/alert-rules"

# The NL "extra oxygen" component of an SpO2 Observation (SNOMED): such readings are not
# comparable with room-air limits and baselines.
SUPPLEMENTAL_OXYGEN = "266702001"

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
