"""``service.fhir.references``: rewriting references through a map."""

from __future__ import annotations

import copy

from service.fhir.references import remapped, rewritten


def _resource() -> dict:
    return {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/p"},
        "performer": [{"reference": "Practitioner/x"}, {"display": "nurse"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
    }


def test_remapped_replaces_what_the_map_names_like_rewritten() -> None:
    original = _resource()
    before = copy.deepcopy(original)
    mapping = {"Patient/p": "Patient/123", "Practitioner/x": "Practitioner/9"}
    result = remapped(original, mapping)
    assert result == rewritten(original, mapping)
    assert result["subject"] == {"reference": "Patient/123"}
    assert result["performer"][0] == {"reference": "Practitioner/9"}
    assert original == before  # the input is left as it was
    assert result["code"] is original["code"]  # what does not change is shared
    assert result["performer"][1] is original["performer"][1]


def test_remapped_returns_the_node_itself_when_nothing_changes() -> None:
    original = _resource()
    assert remapped(original, {"Patient/other": "Patient/1"}) is original
