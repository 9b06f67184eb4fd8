"""The worklist, the patient list and a patient's trend charts, as served."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import orjson
from fastapi.testclient import TestClient

from service.alerts.rules import default_rule_set
from service.dashboard.worklist import PRIORITIES
from service.demo.data import DemoSummary
from tests.alerts_api.conftest import goal_range
from tests.dashboard.conftest import fhir_of

SVG = "{http://www.w3.org/2000/svg}"
_ROW = re.compile(r'<tr class="alert-row level-(\w+)[^"]*" data-flag="([^"]+)"')
_OTHER = re.compile(r'<li class="other level-\w+" data-flag="([^"]+)">')


def _open_flags(client: TestClient) -> dict[str, dict[str, object]]:
    rows = fhir_of(client).search("Flag", [("status", "active"), ("_count", "100")]).matches
    return {r.res_id: orjson.loads(r.content or "{}") for r in rows}


def _charts(page: str) -> dict[str, ET.Element]:
    found = {}
    for match in re.finditer(r'<svg xmlns="http://www.w3.org/2000/svg".*?</svg>', page, re.S):
        svg = ET.fromstring(match.group(0))
        found[svg.get("id", "").removeprefix("chart-")] = svg
    return found


def test_the_worklist_lists_every_open_alert_most_urgent_first(
    logged_in: TestClient, demo: DemoSummary
) -> None:
    page = logged_in.get("/dashboard")
    assert page.status_code == 200
    flags = _open_flags(logged_in)
    rows = _ROW.findall(page.text)
    # one row per patient: the most urgent alert, the patient's others inside the row
    subjects = [flags[flag_id]["subject"]["reference"] for _, flag_id in rows]  # type: ignore[index]
    assert len(subjects) == len(set(subjects)) == 2
    assert {flag_id for _, flag_id in rows} | set(_OTHER.findall(page.text)) == set(flags)
    levels = [level for level, _ in rows]
    rank = {level: r for level, r in PRIORITIES.values()}
    assert levels == sorted(levels, key=rank.__getitem__)
    starts = [str(flags[flag_id]["period"]["start"]) for _, flag_id in rows]  # type: ignore[index]
    for (a_level, _), (b_level, _), a, b in zip(rows, rows[1:], starts, starts[1:], strict=False):
        if a_level == b_level:
            assert a <= b  # within a priority the longest-waiting first
    names = {p.name for p in demo.patients if p.name != "Willem Bakker"}
    assert all(name in page.text for name in names)
    assert "Willem Bakker" not in page.text  # stable: no alerts
    assert f'id="count-new">{len(flags)}<' in page.text
    for flag in flags.values():
        coding = flag["code"]["coding"][0]  # type: ignore[index]
        assert coding["display"] in page.text  # the rule's title
    assert page.text.count('action="/dashboard/alerts/') == 2 * len(flags)


def test_the_patient_list_shows_the_enrolled_patients(
    logged_in: TestClient, demo: DemoSummary
) -> None:
    page = logged_in.get("/dashboard/patients")
    assert page.status_code == 200
    for p in demo.patients:
        assert f'href="/dashboard/patients/{p.patient_id}"' in page.text
    assert "COPD, Heart failure" in page.text  # Willem is in both programmes


def test_a_patient_page_draws_charts_with_thresholds_and_alert_markers(
    logged_in: TestClient, demo: DemoSummary
) -> None:
    hf = demo.patients[0]
    page = logged_in.get(f"/dashboard/patients/{hf.patient_id}")
    assert page.status_code == 200 and hf.name in page.text
    charts = _charts(page.text)
    # respiratory rate and temperature only with data (the heart-failure programme reads neither)
    assert list(charts) == ["weight", "sbp", "dbp", "hr", "spo2", "cat"]
    hf_rules = default_rule_set().for_programmes({"HF"})
    spo2_limits = {
        float(band_value)
        for rule in hf_rules
        for band in rule.options.get("bands", [])
        if band["concept"] == "spo2"
        and (band_value := rule.params[band["param"]].default) is not None
    }
    drawn = {
        float(g.get("data-value", ""))
        for g in charts["spo2"].iter(f"{SVG}g")
        if "threshold" in g.get("class", "")
    }
    assert drawn == spo2_limits
    # the weight gain alert: its evidence Observations are ringed on the weight chart
    flags = [
        f
        for f in _open_flags(logged_in).values()
        if f["subject"]["reference"] == f"Patient/{hf.patient_id}"  # type: ignore[index]
    ]
    weight_alert = next(
        f
        for f in flags
        if f["code"]["coding"][0]["code"] == "HF-WT-3D"  # type: ignore[index]
    )
    evidence = {
        e["valueReference"]["reference"].removeprefix("Observation/")  # type: ignore[index]
        for e in weight_alert["extension"]  # type: ignore[attr-defined]
        if e["url"].endswith("flag-detail")
    }
    weight = charts["weight"]
    ringed_points = {
        c.get("data-ref")
        for c in weight.iter(f"{SVG}circle")
        if c.get("class") == "point"
        and any(
            r.get("cx") == c.get("cx") and r.get("cy") == c.get("cy")
            for r in weight.iter(f"{SVG}circle")
            if "evidence" in r.get("class", "")
        )
    }
    assert evidence <= ringed_points
    markers = [g for g in weight.iter(f"{SVG}g") if "alert-marker" in g.get("class", "")]
    assert any("HF-WT-3D" in (g.findtext(f"{SVG}title") or "") for g in markers)
    assert all("alert-open" in g.get("class", "") for g in markers)
    assert "No CAT scores in this period" in ET.tostring(charts["cat"], encoding="unicode")
    # the data table fallback lists the weights, the evidence rows marked
    assert page.text.count('class="is-evidence"') >= len(evidence)
    assert "<script" not in page.text


def test_the_period_switch_shows_90_days(logged_in: TestClient, demo: DemoSummary) -> None:
    hf = demo.patients[0]
    short = _charts(logged_in.get(f"/dashboard/patients/{hf.patient_id}?days=30").text)
    long = _charts(logged_in.get(f"/dashboard/patients/{hf.patient_id}?days=90").text)

    def first_tick(svg: ET.Element) -> str:
        ticks = [t.text or "" for t in svg.iter(f"{SVG}text") if t.get("class") == "tick"]
        return next(t for t in ticks if not t.replace(".", "").isdigit())

    assert first_tick(short["weight"]) != first_tick(long["weight"])
    page = logged_in.get(f"/dashboard/patients/{hf.patient_id}?days=90").text
    assert 'aria-current="page">90 days' in page
    assert "Trends, last 90 days" in page
    odd = logged_in.get(f"/dashboard/patients/{hf.patient_id}?days=7").text
    assert "Trends, last 30 days" in odd  # only the offered periods


def test_a_personal_goal_is_drawn_and_marked_personal(
    logged_in: TestClient, demo: DemoSummary
) -> None:
    hf = demo.patients[0]
    fhir = fhir_of(logged_in)
    goal = {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "personal heart rate limits"},
        "subject": {"reference": f"Patient/{hf.patient_id}"},
        "startDate": "2020-01-01",
        "target": [goal_range("8867-4", "/min", 45, 95)],
    }
    goal_id = fhir.create(goal).res_id
    (plan,) = fhir.search("CarePlan", [("patient", hf.patient_id)]).matches
    care_plan = orjson.loads(plan.content or "{}")
    care_plan["goal"] = [{"reference": f"Goal/{goal_id}"}]
    fhir.update("CarePlan", plan.res_id, care_plan)
    hr = _charts(logged_in.get(f"/dashboard/patients/{hf.patient_id}").text)["hr"]
    lines = {
        g.get("data-value"): g.get("class", "")
        for g in hr.iter(f"{SVG}g")
        if "threshold" in g.get("class", "")
    }
    assert "personal" in lines["95"] and "personal" in lines["45"]
    default_high = default_rule_set().get("HF-HR-HIGH").params["orange_above"].default
    assert f"{default_high:g}" not in lines  # replaced by the personal limit


def test_an_unknown_patient_is_a_404_page(logged_in: TestClient) -> None:
    for path in ("/dashboard/patients/nope", "/dashboard/patients/bad%20id"):
        response = logged_in.get(path)
        assert response.status_code == 404 and "Patient not found" in response.text
