"""The dashboard in a real browser: Playwright driving headless Chromium (``/usr/bin/chromium``)
against a live server with the demo data, on a laptop and on a tablet viewport.

Log in, see the demo's alerts, open a patient, see the charts with thresholds and alert markers,
acknowledge (or resolve) an alert and see it leave the worklist. Screenshots are saved as test
artifacts in ``test-artifacts/dashboard/``. The browser is not optional: without Chromium these
tests fail (``make test`` installs it).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn

from service.alerts.ingest import AlertService
from service.app import create_app
from service.demo.data import CLINICIAN_UZI, DemoSummary, load_demo
from service.fhir.service import FhirService
from service.settings import Settings
from service.storage import migrate
from service.storage.db import Database
from tests.clock import NOW, PinnedClock
from tests.dashboard.conftest import PROFILES

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
LAPTOP = {"width": 1440, "height": 900}
TABLET = {"width": 820, "height": 1180}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, FhirService, DemoSummary]]:
    """A live server in open mode (as ``make run``) with the full demo loaded."""
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'telemon.sqlite'}"
    database = Database(url)
    migrate.upgrade(database)
    database.dispose()
    settings = Settings(database_url=url, auth="open", profiles_dir=PROFILES)
    app = create_app(settings, clock=PinnedClock(NOW))
    fhir: FhirService = app.state.telemon.fhir
    summary = load_demo(fhir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    live = uvicorn.Server(config)
    thread = threading.Thread(target=live.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not live.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", fhir, summary
    live.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from the Debian package (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(`make test` installs it as root; or `apt-get install chromium`)."
        )
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


class Visit:
    """A browser page on the live server that records requests and console errors."""

    def __init__(self, browser: Any, base: str, viewport: dict[str, int], name: str) -> None:
        self.base, self.name = base, name
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def shot(self, step: str) -> Path:
        """A full-page screenshot as a test artifact."""
        path = ARTIFACTS / f"{self.name}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    def login(self) -> None:
        """Open the dashboard, get sent to the login, log in as the demo clinician."""
        self.page.goto(self.base + "/dashboard")
        assert self.page.url.startswith(self.base + "/dashboard/login")
        assert "Simulated UZI login" in self.page.inner_text("main")
        self.shot("login")
        self.page.fill("#uzi", CLINICIAN_UZI)
        self.page.click("form[action='/dashboard/login'] button[type=submit]")
        self.page.wait_for_url(self.base + "/dashboard")

    def rows(self, table: str = "#worklist") -> list[str]:
        """The Flag ids of a worklist table's rows, in order."""
        return [
            r.get_attribute("data-flag") or ""
            for r in self.page.locator(f"{table} tr.alert-row").all()
        ]

    def close(self) -> None:
        """Close the page; nothing may have come from elsewhere or failed in the console."""
        self.context.close()
        assert all(u.startswith(self.base + "/dashboard") for u in self.requests), self.requests
        assert self.errors == []


def _open_alerts(fhir: FhirService) -> dict[str, dict[str, Any]]:
    rows = fhir.search("Flag", [("status", "active"), ("_count", "100")]).matches
    return {r.res_id: orjson.loads(r.content or "{}") for r in rows}


def test_the_dashboard_on_a_laptop_and_a_tablet(
    server: tuple[str, FhirService, DemoSummary], browser: Any, subtests: Any
) -> None:
    """One test (so one xdist worker, one server, one browser); a subtest per viewport."""
    with subtests.test("laptop: alerts, a patient's charts, acknowledge"):
        _laptop(server, browser)
    with subtests.test("tablet: alerts, a patient's charts, resolve, logout"):
        _tablet(server, browser)


def _flags_of(fhir: FhirService, patient_id: str) -> dict[str, dict[str, Any]]:
    subject = f"Patient/{patient_id}"
    return {k: f for k, f in _open_alerts(fhir).items() if f["subject"]["reference"] == subject}


def _limit(flag: dict[str, Any]) -> float | None:
    for ext in flag["extension"]:
        if ext["url"].endswith("/alert-limit"):
            parts = {p["url"]: p for p in ext["extension"]}
            return float(parts["value"]["valueQuantity"]["value"])
    return None


def _rule(flag: dict[str, Any]) -> str:
    return str(flag["code"]["coding"][0]["code"])


def _laptop(server: tuple[str, FhirService, DemoSummary], browser: Any) -> None:
    base, fhir, demo = server
    visit = Visit(browser, base, LAPTOP, "laptop")
    page = visit.page
    visit.login()
    hf, copd = demo.patients[0], demo.patients[1]
    open_alerts = _open_alerts(fhir)
    assert len(open_alerts) >= 4
    # one row per patient: the patient's concurrent alerts under the most urgent one
    patients = {f["subject"]["reference"].removeprefix("Patient/") for f in open_alerts.values()}
    rows = page.locator("#worklist tr.alert-row")
    assert rows.count() == len(patients) == 2
    for pid in patients:
        row = page.locator(f"#worklist tr.alert-row[data-patient='{pid}']")
        mine = _flags_of(fhir, pid)
        assert row.get_attribute("data-alerts") == str(len(mine))
        assert {row.get_attribute("data-flag")} | {
            o.get_attribute("data-flag") for o in row.locator(".group-others li.other").all()
        } == set(mine)
    first = rows.first
    assert first.locator(".badge").first.inner_text() == "HOOG"  # Dutch by default
    # title and text lead with the same finding, for every alert shown: the Flag's text starts
    # with its title; the row shows the title, then the rest of that first line
    for flag_id, flag in open_alerts.items():
        title = flag["code"]["coding"][0]["display"]
        headline = flag["code"]["text"].split("\n")[0]
        assert headline.startswith(f"{title}: ")
        cell = page.locator(f"[data-flag='{flag_id}']").first
        assert cell.locator("strong").first.inner_text() == title
        assert cell.locator(".headline").first.inner_text() == headline.removeprefix(f"{title}: ")
    # the patient is identifiable: birth date with age and the BSN's last four digits
    hf_row = page.locator(f"#worklist tr.alert-row[data-patient='{hf.patient_id}']")
    patient = orjson.loads(fhir.read("Patient", hf.patient_id).content or "{}")
    year, month, day = patient["birthDate"].split("-")
    ident = hf_row.locator(".ident").inner_text()
    assert f"geb. {day}-{month}-{year} (" in ident and " jr)" in ident
    assert f"BSN …{hf.bsn[-4:]}" in ident
    # adherence: when the last measurement of each kind arrived
    seen = hf_row.locator(".adherence .last-seen")
    assert {s.get_attribute("data-chart") for s in seen.all()} >= {"weight", "sbp", "hr", "spo2"}
    assert hf_row.locator(".adherence .stale").count() == 0  # he measured this morning
    visit.shot("worklist")

    # the heart-failure patient: every limit an alert fired on is drawn, and agrees with it
    page.locator("#worklist a", has_text=hf.name).first.click()
    page.wait_for_url(f"{base}/dashboard/patients/{hf.patient_id}")
    assert page.inner_text("#patient-name") == hf.name
    for chart in ("weight", "sbp", "dbp", "hr", "spo2", "cat"):
        assert page.locator(f"svg#chart-{chart}").is_visible()
    charts = {"weight": "weight", "hr": "hr", "spo2": "spo2", "sbp": "sbp"}
    hf_flags = _flags_of(fhir, hf.patient_id)
    drawn = 0
    for flag in hf_flags.values():
        limit = _limit(flag)
        concept = next(
            (p["valueCode"] for e in flag["extension"] if e["url"].endswith("/alert-limit")
             for p in e["extension"] if p["url"] == "concept"),
            None,
        )
        if limit is None or concept not in charts:
            continue
        fired = page.locator(f"svg#chart-{charts[concept]} g.threshold.fired")
        assert f"{limit:g}" in [g.get_attribute("data-value") for g in fired.all()], flag["id"]
        drawn += 1
    assert drawn >= 2
    # HF-HR-HIGH fired on the personal limit (baseline + 20 %): the reading that fired (the
    # newest of its evidence; older evidence was judged against the baseline of its day) lies
    # above the line drawn, not under the programme's 110
    hr_flag = next(f for f in hf_flags.values() if _rule(f) == "HF-HR-HIGH")
    line_y = float(
        page.locator(f"svg#chart-hr g.threshold.fired[data-value='{_limit(hr_flag):g}'] line")
        .get_attribute("y1") or 0
    )
    rings = page.locator("svg#chart-hr circle.evidence").all()
    newest = max(rings, key=lambda c: float(c.get_attribute("cx") or 0))
    assert float(newest.get_attribute("cy") or 0) < line_y
    programme = page.locator("svg#chart-hr g.threshold[data-value='110'] line")
    assert float(newest.get_attribute("cy") or 0) > float(programme.get_attribute("y1") or 0)
    # the weight axis spans at least 4 kg; limits only on the series they apply to
    weight = page.locator("svg#chart-weight")
    low, high = (float(weight.get_attribute(f"data-{end}") or 0) for end in ("low", "high"))
    assert high - low >= 4
    for title in page.locator("svg#chart-dbp g.threshold title").all():
        assert (title.text_content() or "").startswith("Diastole ")
    for title in page.locator("svg#chart-sbp g.threshold title").all():
        assert (title.text_content() or "").startswith(("Systole ", "Hoge bloeddruk", "Lage"))
    assert page.locator("svg#chart-sbp g.threshold").count() >= 2
    assert page.locator("svg#chart-weight g.alert-marker.alert-open").count() >= 1
    assert page.locator("svg#chart-weight circle.evidence").count() >= 1
    # every weight of the last 30 days (a month of mornings, less the few forgotten ones)
    since = (fhir.clock() - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    weights = fhir.search(
        "Observation",
        [("patient", hf.patient_id), ("code", "http://loinc.org|29463-7"), ("date", f"ge{since}")],
    ).matches
    assert len(weights) >= 25
    assert page.locator("svg#chart-weight circle.point").count() == len(weights)
    # the HF patient fills in no CAT: the chart says so
    assert "Geen CAT-scores" in (page.locator("svg#chart-cat").text_content() or "")
    assert page.locator(".adherence .last-seen[data-chart='weight']").count() == 1
    page.click("nav.periods a:has-text('90 dagen')")
    page.wait_for_url(f"{base}/dashboard/patients/{hf.patient_id}?days=90")
    assert page.locator("svg#chart-weight circle.point").count() > 50  # the demo's 8 weeks
    visit.shot("patient")

    # the COPD patient's CAT scores are drawn
    page.goto(f"{base}/dashboard/patients/{copd.patient_id}")
    assert page.locator("svg#chart-cat circle.point").count() >= 3  # weekly
    visit.shot("patient-copd")

    # acknowledge the whole group of the first row, with a note: it leaves the list to handle
    page.click("nav[aria-label=Main] a:has-text('Meldingen')")
    page.wait_for_url(base + "/dashboard")
    row = page.locator("#worklist tr.alert-row").first
    group = [row.get_attribute("data-flag")] + [
        o.get_attribute("data-flag") for o in row.locator(".group-others li.other").all()
    ]
    assert len(group) >= 2
    form = row.locator("td.cell-actions form")
    assert form.locator("input[name=scope]").is_checked()
    form.locator("input[name=note]").fill("Gebeld: komt vanmiddag op de poli")
    form.locator("button:has-text('Gezien')").click()
    page.wait_for_url(base + "/dashboard?notice=acknowledged")
    assert "als gezien gemarkeerd" in page.inner_text(".notice")
    assert not set(group) & set(visit.rows())
    acked = page.locator("#acknowledged tr.alert-row").first
    assert "gezien door dr. Eva Visser" in acked.inner_text()
    assert "Gebeld: komt vanmiddag op de poli" in acked.inner_text()
    visit.shot("acknowledged")
    for flag_id in group:
        flag = orjson.loads(fhir.read("Flag", str(flag_id)).content or "{}")
        urls = {e["url"].rsplit("/", 1)[1]: e for e in flag["extension"]}
        assert flag["status"] == "active"
        assert urls["alert-acknowledged-by"]["valueReference"]["display"] == "dr. Eva Visser"
        assert urls["alert-note"]["valueAnnotation"]["text"] == "Gebeld: komt vanmiddag op de poli"
    visit.close()


def _tablet(server: tuple[str, FhirService, DemoSummary], browser: Any) -> None:
    base, fhir, demo = server
    visit = Visit(browser, base, TABLET, "tablet")
    page = visit.page
    visit.login()
    assert page.locator("#worklist thead").is_hidden()  # the table reflows into cards
    copd = demo.patients[1]
    row = page.locator(f"#worklist tr.alert-row[data-patient='{copd.patient_id}']")
    assert row.locator(".ident").is_visible() and row.locator(".adherence").is_visible()
    visit.shot("worklist")
    # acknowledge one alert of the group only (unticking "all alerts of this patient")
    before = set(_flags_of(fhir, copd.patient_id))
    main = row.get_attribute("data-flag")
    form = row.locator("td.cell-actions form")
    form.locator("input[name=scope]").uncheck()
    form.locator("button:has-text('Gezien')").click()
    page.wait_for_url(base + "/dashboard?notice=acknowledged")
    acked = {
        k for k, f in _flags_of(fhir, copd.patient_id).items()
        if any(e["url"].endswith("alert-acknowledged") for e in f["extension"])
    }
    assert acked == {main} and len(before) > 1
    page.locator("#worklist a", has_text=copd.name).first.click()
    page.wait_for_url(f"{base}/dashboard/patients/{copd.patient_id}")
    widths = [page.locator(f"svg#chart-{c}").bounding_box()["width"] for c in ("weight", "spo2")]
    assert all(w > TABLET["width"] * 0.8 for w in widths)  # one chart per row on a tablet
    assert page.locator("svg#chart-spo2 g.alert-marker").count() >= 1
    assert page.locator("svg#chart-spo2 g.threshold.fired").count() >= 1
    visit.shot("patient")
    # resolve one of her open alerts from the patient page, with a note: the clinician is named
    item = page.locator("#patient-alerts li.alert-item:not(.is-closed)").first
    flag_id = item.get_attribute("data-flag")
    item.locator("input[name=note]").fill("Prednison gestart")
    item.locator("button:has-text('Afsluiten')").click()
    page.wait_for_url(f"{base}/dashboard/patients/{copd.patient_id}?days=30&notice=resolved")
    closed = page.locator(f"#patient-alerts li[data-flag='{flag_id}'].is-closed")
    assert closed.count() == 1
    assert "afgesloten door dr. Eva Visser" in closed.inner_text()
    assert "Prednison gestart" in closed.inner_text()
    flag = orjson.loads(fhir.read("Flag", str(flag_id)).content or "{}")
    assert flag["status"] == "inactive"
    resolver = next(e for e in flag["extension"] if e["url"].endswith("alert-resolved-by"))
    assert resolver["valueReference"]["reference"].startswith("Practitioner/")
    visit.shot("resolved")
    page.click("nav[aria-label=Main] a:has-text('Meldingen')")
    assert flag_id not in visit.rows() and flag_id not in visit.rows("#acknowledged")
    # four days later, nobody has measured: the missing-data rule's alert makes them stand out
    clock = fhir.clock
    assert isinstance(clock, PinnedClock)
    clock.advance(timedelta(days=4))
    AlertService(fhir).sweep()
    page.goto(base + "/dashboard")
    stale = page.locator("tr.alert-row.not-measuring")
    assert stale.count() >= 1
    assert "Meet niet meer" in (stale.first.text_content() or "")
    assert stale.first.locator(".adherence .stale").count() >= 1
    visit.shot("not-measuring")
    # log out: the dashboard asks for a login again
    page.click("button:has-text('Uitloggen')")
    page.wait_for_url(base + "/dashboard/login?notice=logged-out")
    page.goto(base + "/dashboard")
    assert page.url.startswith(base + "/dashboard/login")
    visit.close()
