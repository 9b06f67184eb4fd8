"""Flag texts per rule: the title (code display) and the text lead with the same finding, and
the text shows the value's unit and the limit that fired — in Dutch and in English."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.alerts.engine import evaluate, sweep_missing
from service.alerts.episodes import Alert, to_flag
from service.alerts.measurements import Measurement
from service.alerts.personalisation import Override, PatientConfig
from service.alerts.results import Limit
from service.core.messages import limit_text, message, rule_title
from tests.alerts.helpers import BOTH, COPD, HF, alerts, at, m, symptom, weights

# rule id -> (config, measurements, the limit that fires, or None for rules without one)
Scenario = tuple[PatientConfig, list[Measurement], Limit | None]
DRY = replace(HF, overrides=(Override("dry_weight_kg", 78.0, at(days=-30)),))
USUAL_SPO2 = replace(COPD, overrides=(Override("usual_spo2", 95, at(days=-30)),))
CATS = [m(f"c{i}", "cat", v, at(days=7 * i)) for i, v in enumerate([12, 10, 11])]
SCENARIOS: dict[str, Scenario] = {
    "HF-WT-1D": (HF, weights(80.0, 81.1), Limit("weight", ">", 81.0, "kg", since=at())),
    "HF-WT-3D": (
        HF,
        weights(78.1, 78.5, 79.6, 80.5),
        Limit("weight", ">", 80.1, "kg", since=at()),
    ),
    "HF-WT-BASE": (DRY, weights(80.6), Limit("weight", ">=", 80.5, "kg", personal=True)),
    "HF-WT-LOSS": (
        HF,
        weights(80.0, 79.5, 79.0, 77.9),
        Limit("weight", "<", 78.0, "kg", since=at()),
    ),
    "HF-SBP-LOW": (HF, [m("b", "sbp", 78, at())], Limit("sbp", "<", 80, "mmHg")),
    "HF-SBP-HIGH": (HF, [m("b", "sbp", 175, at())], Limit("sbp", ">", 170, "mmHg")),
    "HF-HR-LOW": (HF, [m("h", "hr", 38, at())], Limit("hr", "<", 40, "/min")),
    "HF-HR-HIGH": (HF, [m("h", "hr", 131, at())], Limit("hr", ">", 130, "/min")),
    "HF-SPO2-LOW": (HF, [m("s", "spo2", 88, at())], Limit("spo2", "<", 90, "%")),
    "HF-SYMPTOM": (HF, [symptom("s", "267038008", at())], None),
    "HF-COMBO": (
        HF,
        [*weights(78.0, 78.2, 78.4, 80.6), symptom("s1", "267038008", at(days=2), severity=1)],
        None,
    ),
    "COPD-SPO2-ABS": (COPD, [m("s", "spo2", 88, at())], Limit("spo2", "<", 90, "%")),
    "COPD-SPO2-DROP": (
        USUAL_SPO2,
        [m("s", "spo2", 91, at())],
        Limit("spo2", "<=", 91, "%", personal=True),
    ),
    "COPD-RR-HIGH": (COPD, [m("r", "rr", 25, at())], Limit("rr", ">=", 24, "/min")),
    "COPD-HR-HIGH": (COPD, [m("h", "hr", 112, at())], Limit("hr", ">=", 110, "/min")),
    "COPD-TEMP": (COPD, [m("t", "temp", 38.4, at())], Limit("temp", ">=", 38, "Cel")),
    "COPD-CAT-RISE": (
        COPD,
        [*CATS, m("c3", "cat", 15, at(days=21))],
        Limit("cat", ">=", 15, "", personal=True),
    ),
    "COPD-ROME-COMPOSITE": (
        COPD,
        [m("d", "dyspnoea", 6, at()), m("r", "rr", 24, at(hours=1)), m("h", "hr", 96, at(hours=2))],
        None,
    ),
    "GEN-IMPLAUSIBLE": (
        HF,
        [m("w0", "weight", 80, at()), m("w1", "weight", 90, at(hours=3))],
        None,
    ),
}


RELATIVE = {"HF-WT-1D": "+1 kg", "HF-WT-3D": "+2 kg", "HF-WT-LOSS": "-2 kg"}


def _alert(rule_id: str, language: str) -> Alert:
    config, ms, _ = SCENARIOS[rule_id]
    config = replace(config, language=language)
    changes = evaluate(config, ms, [], max(x.effective for x in ms) + (at(hours=1) - at()))
    return alerts(changes)[rule_id]


@pytest.mark.parametrize("language", ["nl", "en"])
@pytest.mark.parametrize("rule_id", sorted(SCENARIOS))
def test_title_and_text_lead_with_the_same_finding(rule_id: str, language: str) -> None:
    alert = _alert(rule_id, language)
    flag = to_flag(alert, language=language)
    title = rule_title(rule_id, language)
    assert flag["code"]["coding"][0]["display"] == title
    headline, *more = flag["code"]["text"].split("\n")
    assert headline.startswith(f"{title}: ")
    # The headline ends with when it was measured (local time), the method is never in it.
    assert headline.endswith(("08:00", "09:00", "10:00", "11:00"))
    assert "median" not in headline and "mediaan" not in headline
    assert "\n".join(more) == "\n".join(line for line in (alert.detail, *alert.reasons) if line)


@pytest.mark.parametrize("language", ["nl", "en"])
@pytest.mark.parametrize("rule_id", sorted(r for r, s in SCENARIOS.items() if s[2] is not None))
def test_text_shows_the_unit_and_the_limit_that_fired(rule_id: str, language: str) -> None:
    expected = SCENARIOS[rule_id][2]
    assert expected is not None
    alert = _alert(rule_id, language)
    assert alert.limit is not None
    assert (alert.limit.concept, alert.limit.op, alert.limit.personal) == (
        expected.concept,
        expected.op,
        expected.personal,
    )
    assert alert.limit.value == pytest.approx(expected.value)
    unit = {"Cel": "°C"}.get(expected.unit, expected.unit)
    if rule_id in RELATIVE:  # day-to-day weight rules state their limit as a change
        shown = message("alert.limit", language, op=expected.op, value=RELATIVE[rule_id])
    else:
        shown = limit_text(expected.op, expected.value, unit, language, personal=expected.personal)
    assert shown in alert.text
    ext = next(e for e in to_flag(alert)["extension"] if e["url"].endswith("/alert-limit"))
    quantity = next(p["valueQuantity"] for p in ext["extension"] if p["url"] == "value")
    assert quantity["comparator"] == expected.op


def test_weight_3d_never_says_1_day_when_the_low_was_yesterday() -> None:
    # Yesterday's 78.0 is the lowest of the 3 days: both day-to-day rules fire, in one group.
    a = alerts(evaluate(HF, weights(80.0, 80.0, 78.0, 80.5), [], at(days=3, hours=1)))
    [owner] = [a[r] for r in ("HF-WT-3D", "HF-WT-1D") if r in a]
    title = rule_title(owner.rule_id, "en")
    assert owner.text.startswith(f"{title}: +2.5 kg")
    assert ("in 1 day" in title) == ("in 1 day" in owner.text)
    assert all(not r.startswith(title) for r in owner.reasons)


def test_merged_group_keeps_the_owner_finding_first() -> None:
    # HF-SPO2-LOW owns the group; the COPD rule's finding is a reason, not the headline.
    a = alerts(evaluate(BOTH, [m("s", "spo2", 84, at())], [], at(hours=1)))
    flag = to_flag(a["HF-SPO2-LOW"], language="en")
    assert flag["code"]["text"].startswith("Low SpO2: SpO2 84 % (limit < 90 %)")
    assert "Low SpO2 at rest on room air: SpO2 84 % (limit < 85 %)" in flag["code"]["text"]


def test_missing_data_text_leads_with_its_title() -> None:
    [change] = sweep_missing(replace(HF, language="nl"), weights(80.0), [], at(days=3))
    assert change.alert is not None
    assert change.alert.text == "Metingen ontbreken: geen gewicht sinds 2 dagen"
