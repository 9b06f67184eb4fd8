"""The known-good shapes of ``validate_structure``: same verdicts and errors as the model alone."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fhir.resources.R4B.observation import Observation

from service.core.outcome import FhirError
from service.validation import structure
from service.validation.structure import validate_structure
from tests import factories

Mutation = Callable[[dict[str, Any]], None]


def _set(*path: str | int, to: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = to

    return mutate


def _observation() -> dict[str, Any]:
    doc = factories.weight("p-1", 80.5)
    doc["identifier"] = [{"system": "urn:telemon:app", "value": "m-1"}]
    doc["note"] = [{"text": "after breakfast"}]
    return doc


def _blood_pressure() -> dict[str, Any]:
    return factories.blood_pressure("p-1", 135, 85)


def _patient() -> dict[str, Any]:
    return factories.patient("999990019", family="de Vries", given="Anna")


# Each case changes only primitive values, so the document keeps the shape of its template:
# exactly the documents the known-good shapes let through without building the model.
CASES: list[tuple[Callable[[], dict[str, Any]], Mutation]] = [
    (_observation, _set("effectiveDateTime", to="2026-11-23T08:30:00+01:00")),
    (_observation, _set("effectiveDateTime", to="2026-13-01T08:30:00Z")),
    (_observation, _set("effectiveDateTime", to="2026-02-30T08:30:00Z")),
    (_observation, _set("effectiveDateTime", to="2026-11-23T24:00:00Z")),
    (_observation, _set("effectiveDateTime", to="2026-11-23T08:30:00")),
    (_observation, _set("effectiveDateTime", to="23-11-2026")),
    (_observation, _set("status", to="fi nal")),
    (_observation, _set("status", to="final ")),
    (_observation, _set("code", "coding", 0, "system", to="http://loinc.org with space")),
    (_observation, _set("code", "coding", 0, "code", to="29463 7")),
    (_observation, _set("code", "coding", 0, "code", to=" 29463-7")),
    (_observation, _set("subject", "reference", to="Patient/p-2")),
    (_observation, _set("valueQuantity", "value", to=1e400)),
    (_observation, _set("valueQuantity", "value", to=81.25)),
    (_observation, _set("valueQuantity", "unit", to="\x00kg")),
    (_observation, _set("identifier", 0, "value", to="")),
    (_observation, _set("identifier", 0, "system", to="not a uri")),
    (_observation, _set("note", 0, "text", to="   ")),
    (_blood_pressure, _set("component", 0, "valueQuantity", "value", to=140.5)),
    (_blood_pressure, _set("component", 1, "code", "coding", 0, "code", to="x y")),
    (_blood_pressure, _set("effectiveDateTime", to="2026")),
    (_patient, _set("birthDate", to="1950-02-29")),
    (_patient, _set("birthDate", to="1952-02-29")),
    (_patient, _set("birthDate", to="1950-1-1")),
    (_patient, _set("identifier", 0, "value", to="12345678")),
    (_patient, _set("name", 0, "given", 0, to="Anna\tMaria")),
]


def _verdict(doc: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]] | str:
    try:
        return validate_structure(doc)
    except FhirError as exc:
        return [(i.code, i.diagnostics, i.expression) for i in exc.issues]


@pytest.fixture(autouse=True)
def no_known_shapes() -> Iterator[None]:
    structure._VALID_SHAPES.clear()
    yield
    structure._VALID_SHAPES.clear()


@pytest.mark.parametrize(("template", "mutate"), CASES)
def test_a_known_shape_gives_the_models_verdict(
    template: Callable[[], dict[str, Any]], mutate: Mutation
) -> None:
    doc = template()
    mutate(doc)
    cold = _verdict(copy.deepcopy(doc))  # the model decides: no shape is known yet
    assert _verdict(template()) == template()["resourceType"]  # the template's shape is known
    warm = _verdict(copy.deepcopy(doc))
    assert warm == cold


def test_a_known_shape_skips_only_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = Observation.model_validate

    def counting(data: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(data.get("effectiveDateTime"))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(Observation, "model_validate", counting)
    first = _observation()
    validate_structure(first)
    second = _observation()
    second["effectiveDateTime"] = "2026-11-20T07:00:00+01:00"
    second["valueQuantity"]["value"] = 79.0
    validate_structure(second)
    assert calls == [first["effectiveDateTime"]]

    other_shape = _observation()
    del other_shape["note"]
    validate_structure(other_shape)
    assert len(calls) == 2

    bad = _observation()
    bad["effectiveDateTime"] = "2026-11-31T07:00:00Z"
    with pytest.raises(FhirError) as raised:
        validate_structure(bad)
    assert raised.value.issues[0].expression == ("Observation.effectiveDateTime",)
    assert len(calls) == 3  # a failing primitive: the model itself reports the error


def test_a_rejected_document_teaches_no_shape() -> None:
    bad = _patient()
    bad["birthDate"] = "1950-13-01"
    with pytest.raises(FhirError):
        validate_structure(bad)
    assert structure._VALID_SHAPES == {}


def test_unknown_elements_and_nested_resources_are_never_remembered() -> None:
    unknown = _observation()
    unknown["colour"] = "blue"
    with pytest.raises(FhirError) as raised:
        validate_structure(unknown)
    assert raised.value.issues[0].expression == ("Observation.colour",)
    contained = _observation()
    contained["contained"] = [{"resourceType": "Device", "id": "scale"}]
    contained["device"] = {"reference": "#scale"}
    assert validate_structure(contained) == "Observation"
    assert structure._VALID_SHAPES == {}
    assert validate_structure(_patient()) == "Patient"
    assert len(structure._VALID_SHAPES) == 1
