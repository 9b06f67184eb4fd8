"""Episode semantics: attach, upgrade, acknowledge, resolve, cooldown, idempotency.

See docs/alerts/engine.md#episodes.
"""

from __future__ import annotations

from datetime import timedelta

from service.alerts.episodes import Action, AlertStatus, acknowledge, resolve, to_flag
from service.alerts.personalisation import PatientConfig
from service.alerts.results import Severity
from tests.alerts.helpers import alerts, at, by_rule, m, run


def test_second_qualifying_reading_attaches_without_notification() -> None:
    first = run([m("h1", "hr", 115, at())])
    open_alert = first[0].alert
    assert first[0].action is Action.OPEN and first[0].notify
    second = run(
        [m("h1", "hr", 115, at()), m("h2", "hr", 118, at(hours=4))],
        episodes=[open_alert],
        changed=["h2"],
    )
    change = by_rule(second)["HF-HR-HIGH"]
    assert (change.action, change.notify) == (Action.ATTACH, False)
    assert change.alert.evidence == ("h1", "h2")
    assert change.alert.id == open_alert.id


def test_upgrade_renotifies_and_needs_new_acknowledgement() -> None:
    opened = run([m("h1", "hr", 115, at())])[0].alert
    acked = acknowledge(opened, at(hours=1))
    ms = [m("h1", "hr", 115, at()), m("h2", "hr", 135, at(hours=4))]
    change = by_rule(run(ms, episodes=[acked], changed=["h2"]))["HF-HR-HIGH"]
    assert (change.action, change.notify) == (Action.UPGRADE, True)
    assert change.alert.severity is Severity.RED
    assert change.alert.acknowledged_at is None


def test_acknowledged_episode_still_collects_evidence() -> None:
    acked = acknowledge(run([m("h1", "hr", 115, at())])[0].alert, at(hours=1))
    ms = [m("h1", "hr", 115, at()), m("h2", "hr", 112, at(hours=4))]
    change = by_rule(run(ms, episodes=[acked], changed=["h2"]))["HF-HR-HIGH"]
    assert change.action is Action.ATTACH
    assert change.alert.status is AlertStatus.ACTIVE
    assert change.alert.acknowledged_at == at(hours=1)
    assert change.alert.severity is Severity.ORANGE  # downgrades don't lower it


def test_reevaluating_the_same_data_is_a_noop() -> None:
    ms = [m("h1", "hr", 115, at()), m("h2", "hr", 80, at(hours=3))]
    state = [c.alert for c in run(ms)]
    assert run(ms, episodes=state) == []
    assert run(ms, episodes=state, changed=["h1"]) == []


def test_auto_close_after_two_normal_readings() -> None:
    ms = [m("h1", "hr", 115, at()), m("h2", "hr", 80, at(hours=3)), m("h3", "hr", 82, at(hours=6))]
    change = by_rule(run(ms))["HF-HR-HIGH"]
    assert change.alert.status is AlertStatus.INACTIVE
    assert change.alert.period_end == at(hours=6)
    assert change.alert.resolved_by == "auto"


def test_cooldown_suppresses_equal_severity_but_not_higher() -> None:
    opened = run([m("h1", "hr", 115, at())])[0].alert
    closed = resolve(opened, at(hours=1))
    ms = [m("h1", "hr", 115, at()), m("h2", "hr", 116, at(hours=5))]
    same = by_rule(run(ms, episodes=[closed], changed=["h2"]))["HF-HR-HIGH"]
    assert same.action is Action.SUPPRESSED and not same.notify
    ms[1] = m("h2", "hr", 140, at(hours=5))
    higher = by_rule(run(ms, episodes=[closed], changed=["h2"]))["HF-HR-HIGH"]
    assert higher.action is Action.OPEN and higher.alert.severity is Severity.RED
    assert higher.alert.id != closed.id


def test_after_cooldown_a_new_episode_opens() -> None:
    closed = resolve(run([m("h1", "hr", 115, at())])[0].alert, at(hours=1))
    ms = [m("h1", "hr", 115, at()), m("h2", "hr", 116, at(days=2))]
    change = by_rule(run(ms, episodes=[closed], changed=["h2"]))["HF-HR-HIGH"]
    assert change.action is Action.OPEN and change.alert.evidence == ("h2",)


def test_flag_rendering() -> None:
    alert = alerts(run([m("b1", "sbp", 78, at())]))["HF-SBP-LOW"]
    flag = to_flag(resolve(alert, at(hours=2)), language="en")
    assert flag["status"] == "inactive"
    assert flag["code"]["coding"][0] == {
        "system": "http://telemon.example.org/fhir/CodeSystem/alert-rules",
        "code": "HF-SBP-LOW",
        "display": "Low systolic blood pressure",
    }
    assert flag["code"]["text"] == (
        "Low systolic blood pressure: SBP 78 mmHg (limit < 80 mmHg), 2 Nov 08:00"
    )
    assert flag["subject"] == {"reference": "Patient/p1"}
    assert flag["period"] == {"start": "2026-11-02T07:00:00Z", "end": "2026-11-02T09:00:00Z"}
    ext = {e["url"].rsplit("/", 1)[1]: e for e in flag["extension"]}
    assert ext["flag-detail"]["valueReference"] == {"reference": "Observation/b1"}
    assert ext["flag-priority"]["valueCodeableConcept"]["coding"][0]["code"] == "PH"
    assert ext["alert-rule-version"]["valueString"] == "HF-SBP-LOW|1|2026.1"
    assert ext["alert-limit"]["extension"] == [
        {"url": "concept", "valueCode": "sbp"},
        {"url": "value", "valueQuantity": {"value": 80, "comparator": "<", "unit": "mmHg"}},
        {"url": "personal", "valueBoolean": False},
    ]
    # Dutch by default: the display and the text's lead are the same Dutch title.
    dutch_config = PatientConfig("p1", frozenset({"HF"}))
    dutch = to_flag(alerts(run([m("b1", "sbp", 78, at())], dutch_config))["HF-SBP-LOW"])
    assert dutch["code"]["coding"][0]["display"] == "Lage systolische bloeddruk"
    assert dutch["code"]["text"].startswith("Lage systolische bloeddruk: ")


def test_flag_carries_baseline() -> None:
    ms = [m(f"h{i}", "hr", 70, at(days=i)) for i in range(6)]
    ms += [m("h6", "hr", 84, at(days=6)), m("h7", "hr", 85, at(days=7) + timedelta(hours=1))]
    flag = to_flag(alerts(run(ms))["HF-HR-HIGH"])
    baseline = next(e for e in flag["extension"] if e["url"].endswith("alert-baseline"))
    assert baseline["extension"][0]["valueQuantity"] == {"value": 70, "unit": "/min"}
    priority = next(e for e in flag["extension"] if e["url"].endswith("flag-priority"))
    assert priority["valueCodeableConcept"]["coding"][0]["code"] == "PL"
