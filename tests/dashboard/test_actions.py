"""Acknowledging and resolving alerts from the dashboard: through the Flag update path, so the
Flag, the alert episode and the audit trail agree; CSRF-protected; never on a stale view."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.alerts.episodes import EXT_ACKNOWLEDGED
from service.alerts.state import load_alert
from service.demo.data import DemoSummary
from service.storage import alert_store
from tests.dashboard.conftest import csrf_of, fhir_of, form_post, login


def _flag(client: TestClient, flag_id: str) -> dict[str, Any]:
    result = fhir_of(client).read("Flag", flag_id)
    flag: dict[str, Any] = orjson.loads(result.content or "{}")
    return flag


def _first_row(page: str) -> tuple[str, str]:
    """The first worklist row's Flag id and the version its form carries."""
    flag_id = re.search(r'data-flag="([^"]+)"', page)
    version = re.search(r'name="version" value="(\d+)"', page)
    assert flag_id and version
    return flag_id.group(1), version.group(1)


def _episode(client: TestClient, flag_id: str) -> Any:
    with fhir_of(client).db.read() as conn:
        state = alert_store.get(conn, flag_id)
    assert state is not None
    return load_alert(state)


def test_acknowledge_marks_the_flag_and_the_episode_and_leaves_the_worklist(
    logged_in: TestClient, demo: DemoSummary
) -> None:
    page = logged_in.get("/dashboard").text
    flag_id, version = _first_row(page)
    done = form_post(
        logged_in,
        f"/dashboard/alerts/{flag_id}/acknowledge",
        csrf_token=csrf_of(page),
        version=version,
        next="/dashboard",
    )
    assert done.status_code == 303 and done.headers["location"] == "/dashboard?notice=acknowledged"
    flag = _flag(logged_in, flag_id)
    assert flag["status"] == "active"  # acknowledged, still open
    assert flag["meta"]["versionId"] == str(int(version) + 1)
    assert any(e["url"] == EXT_ACKNOWLEDGED for e in flag["extension"])
    assert _episode(logged_in, flag_id).acknowledged_at is not None
    after = logged_in.get("/dashboard?notice=acknowledged").text
    assert "Alert acknowledged" in after
    to_handle, acknowledged = after.split('id="ack-title"')
    assert f'data-flag="{flag_id}"' not in to_handle
    assert f'data-flag="{flag_id}"' in acknowledged
    row = acknowledged.split(f'data-flag="{flag_id}"')[1].split("</tr>")[0]
    assert "acknowledged by dr. Eva Visser &lt; 1 min ago" in row  # who acted, and when
    assert f"/dashboard/alerts/{flag_id}/acknowledge" not in row  # only Resolve is left
    assert f"/dashboard/alerts/{flag_id}/resolve" in row
    assert 'is-acknowledged" data-flag="' + flag_id in acknowledged


def test_resolve_closes_the_flag_and_the_episode(logged_in: TestClient, demo: DemoSummary) -> None:
    page = logged_in.get("/dashboard").text
    flag_id, version = _first_row(page)
    done = form_post(
        logged_in,
        f"/dashboard/alerts/{flag_id}/resolve",
        csrf_token=csrf_of(page),
        version=version,
    )
    assert done.status_code == 303
    flag = _flag(logged_in, flag_id)
    assert flag["status"] == "inactive" and "end" in flag["period"]
    episode = _episode(logged_in, flag_id)
    assert episode.status.value == "inactive" and episode.resolved_at is not None
    assert f'data-flag="{flag_id}"' not in logged_in.get("/dashboard").text


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_an_action_without_the_csrf_token_changes_nothing(
    logged_in: TestClient, demo: DemoSummary, action: str
) -> None:
    page = logged_in.get("/dashboard").text
    flag_id, version = _first_row(page)
    for token in (None, "forged"):
        fields = (
            {"version": version} if token is None else {"version": version, "csrf_token": token}
        )
        response = form_post(logged_in, f"/dashboard/alerts/{flag_id}/{action}", **fields)
        assert response.status_code == 403
    json_post = logged_in.post(
        f"/dashboard/alerts/{flag_id}/{action}",
        json={"csrf_token": csrf_of(page), "version": version},
        follow_redirects=False,
    )
    assert json_post.status_code == 403
    assert _flag(logged_in, flag_id)["meta"]["versionId"] == version


def test_a_stale_page_cannot_acknowledge_a_changed_alert(
    logged_in: TestClient, demo: DemoSummary
) -> None:
    page = logged_in.get("/dashboard").text
    flag_id, version = _first_row(page)
    # meanwhile an EHR resolves the alert through the FHIR API
    flag = _flag(logged_in, flag_id)
    flag["status"] = "inactive"
    fhir_of(logged_in).update("Flag", flag_id, flag)
    response = form_post(
        logged_in,
        f"/dashboard/alerts/{flag_id}/acknowledge",
        csrf_token=csrf_of(page),
        version=version,
    )
    assert response.status_code == 409
    assert "changed after the page was loaded" in response.text
    assert not any(e["url"] == EXT_ACKNOWLEDGED for e in _flag(logged_in, flag_id)["extension"])


def test_bad_action_requests_are_refused(logged_in: TestClient, demo: DemoSummary) -> None:
    page = logged_in.get("/dashboard").text
    flag_id, version = _first_row(page)
    csrf = csrf_of(page)
    url = f"/dashboard/alerts/{flag_id}/acknowledge"
    assert form_post(logged_in, url, csrf_token=csrf, version="x").status_code == 400
    missing = form_post(
        logged_in, "/dashboard/alerts/nope/acknowledge", csrf_token=csrf, version="1"
    )
    assert missing.status_code == 409 and "does not exist" in missing.text
    patient = demo.patients[0].patient_id  # not a Flag at all
    other = form_post(
        logged_in, f"/dashboard/alerts/{patient}/resolve", csrf_token=csrf, version="1"
    )
    assert other.status_code == 409
    # an action from a patient page returns there
    back = f"/dashboard/patients/{demo.patients[0].patient_id}?days=90"
    done = form_post(logged_in, url, csrf_token=csrf, version=version, next=back)
    assert done.headers["location"] == back + "&notice=acknowledged"
    again = form_post(logged_in, url, csrf_token=csrf, version=str(int(version) + 1))
    assert again.status_code == 409 and "already acknowledged" in again.text


def test_oauth_mode_audits_the_action_as_an_update_by_the_clinician(
    oauth_dash: TestClient, oauth_demo: DemoSummary
) -> None:
    login(oauth_dash)
    page = oauth_dash.get("/dashboard").text
    flag_id, version = _first_row(page)
    form_post(
        oauth_dash,
        f"/dashboard/alerts/{flag_id}/acknowledge",
        csrf_token=csrf_of(page),
        version=version,
    )
    fhir = fhir_of(oauth_dash)
    events = [
        orjson.loads(r.content or "{}")
        for r in fhir.search("AuditEvent", [("subtype", "update"), ("_count", "50")]).matches
    ]
    (event,) = events
    assert event["action"] == "U" and event["outcome"] == "0"
    assert event["agent"][0]["who"]["reference"].startswith("Practitioner/")
    assert "note:" not in orjson.dumps(event).decode()  # none given
    refs = {e["what"].get("reference") for e in event["entity"] if "what" in e}
    flag = _flag(oauth_dash, flag_id)
    assert f"Flag/{flag_id}/_history/{flag['meta']['versionId']}" in refs
    assert flag["subject"]["reference"] in refs  # the patient concerned


def _group_of_first_row(page: str) -> tuple[str, str, list[tuple[str, str]]]:
    found = re.search(r'name="group" value="([^"]+)"', page)
    assert found, "the first patient has concurrent alerts"
    group = [tuple(part.split(":")) for part in found.group(1).split(",")]
    flag_id, version = group[0]
    return flag_id, version, group  # type: ignore[return-value]


def test_acknowledging_the_group_acts_on_every_alert_and_names_the_clinician(
    logged_in: TestClient, demo: DemoSummary
) -> None:
    page = logged_in.get("/dashboard").text
    flag_id, version, group = _group_of_first_row(page)
    assert len(group) >= 2
    done = form_post(
        logged_in,
        f"/dashboard/alerts/{flag_id}/acknowledge",
        csrf_token=csrf_of(page),
        version=version,
        group=",".join(f"{i}:{v}" for i, v in group),
        scope="group",
        note="  Called her:\nseen at the clinic today ",
    )
    assert done.status_code == 303
    for each, _ in group:
        flag = _flag(logged_in, each)
        ext = {e["url"].rsplit("/", 1)[1]: e for e in flag["extension"]}
        assert ext["alert-acknowledged-by"]["valueReference"]["display"] == "dr. Eva Visser"
        note = ext["alert-note"]["valueAnnotation"]
        assert note["text"] == "Called her: seen at the clinic today"  # one line
        assert note["authorReference"]["reference"].startswith("Practitioner/")
        episode = _episode(logged_in, each)
        assert episode.acknowledged_by and episode.acknowledged_by.startswith("Practitioner/")
        assert [n.text for n in episode.notes] == ["Called her: seen at the clinic today"]
    after = logged_in.get("/dashboard").text
    assert "Called her: seen at the clinic today" in after


def test_acknowledging_one_alert_of_a_group_leaves_the_others(
    logged_in: TestClient, demo: DemoSummary
) -> None:
    page = logged_in.get("/dashboard").text
    flag_id, version, group = _group_of_first_row(page)
    form_post(  # the group is named, but the scope is not "group": this alert only
        logged_in,
        f"/dashboard/alerts/{flag_id}/acknowledge",
        csrf_token=csrf_of(page),
        version=version,
        group=",".join(f"{i}:{v}" for i, v in group),
    )
    acknowledged = {
        each
        for each, _ in group
        if any(e["url"] == EXT_ACKNOWLEDGED for e in _flag(logged_in, each)["extension"])
    }
    assert acknowledged == {flag_id}


def test_a_resolve_from_the_dashboard_records_the_clinician_not_the_ehr(
    logged_in: TestClient, demo: DemoSummary
) -> None:
    page = logged_in.get("/dashboard").text
    flag_id, version = _first_row(page)
    form_post(
        logged_in,
        f"/dashboard/alerts/{flag_id}/resolve",
        csrf_token=csrf_of(page),
        version=version,
        note="Diuretics increased",
    )
    flag = _flag(logged_in, flag_id)
    assert flag["status"] == "inactive"
    ext = {e["url"].rsplit("/", 1)[1]: e for e in flag["extension"]}
    assert ext["alert-resolved-by"]["valueReference"]["reference"].startswith("Practitioner/")
    assert ext["alert-note"]["valueAnnotation"]["text"] == "Diuretics increased"
    episode = _episode(logged_in, flag_id)
    assert episode.resolved_by.startswith("Practitioner/") and episode.resolved_by != "ehr"


@pytest.mark.parametrize(
    "group", ["x:1,y", "a:b", "../etc:1", ",".join(f"f{i}:1" for i in range(3))]
)
def test_a_malformed_group_changes_nothing(
    logged_in: TestClient, demo: DemoSummary, group: str
) -> None:
    page = logged_in.get("/dashboard").text
    flag_id, version = _first_row(page)
    done = form_post(
        logged_in,
        f"/dashboard/alerts/{flag_id}/acknowledge",
        csrf_token=csrf_of(page),
        version=version,
        group=group,  # not naming this alert, or malformed
        scope="group",
    )
    assert done.status_code == 400
    assert not any(e["url"] == EXT_ACKNOWLEDGED for e in _flag(logged_in, flag_id)["extension"])


def test_a_note_is_in_the_audit_trail(oauth_dash: TestClient, oauth_demo: DemoSummary) -> None:
    login(oauth_dash)
    page = oauth_dash.get("/dashboard").text
    flag_id, version = _first_row(page)
    form_post(
        oauth_dash,
        f"/dashboard/alerts/{flag_id}/acknowledge",
        csrf_token=csrf_of(page),
        version=version,
        note="Phoned the patient",
    )
    events = fhir_of(oauth_dash).search("AuditEvent", [("subtype", "update")]).matches
    assert len(events) == 1
    assert "note: Phoned the patient" in (events[0].content or "")
