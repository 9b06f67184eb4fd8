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

from service.app import create_app
from service.demo import CLINICIAN_UZI, DemoSummary, load_demo
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


def _laptop(server: tuple[str, FhirService, DemoSummary], browser: Any) -> None:
    base, fhir, demo = server
    visit = Visit(browser, base, LAPTOP, "laptop")
    page = visit.page
    visit.login()
    # the demo's alerts, most urgent first
    open_alerts = _open_alerts(fhir)
    assert len(open_alerts) >= 4
    assert set(visit.rows()) == set(open_alerts)
    assert page.locator("#worklist tr.alert-row").first.locator(".badge").inner_text() == "HIGH"
    hf = demo.patients[0]
    assert page.locator("#worklist").get_by_text(hf.name).count() >= 1
    visit.shot("worklist")

    # open the heart-failure patient: charts with thresholds and alert markers
    page.locator("#worklist a", has_text=hf.name).first.click()
    page.wait_for_url(f"{base}/dashboard/patients/{hf.patient_id}")
    assert page.inner_text("#patient-name") == hf.name
    for chart in ("weight", "bp", "hr", "spo2", "cat"):
        assert page.locator(f"svg#chart-{chart}").is_visible()
    assert page.locator("svg#chart-spo2 g.threshold").count() >= 2
    assert page.locator("svg#chart-bp g.threshold").count() >= 2
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
    page.click("nav.periods a:has-text('90 days')")
    page.wait_for_url(f"{base}/dashboard/patients/{hf.patient_id}?days=90")
    assert page.locator("svg#chart-weight circle.point").count() > 50  # the demo's 8 weeks
    visit.shot("patient")

    # acknowledge the first alert on the worklist: it leaves the list of alerts to handle
    page.click("nav[aria-label=Main] a:has-text('Alerts')")
    page.wait_for_url(base + "/dashboard")
    first = visit.rows()[0]
    before = len(visit.rows())
    page.locator(f"tr[data-flag='{first}'] button:has-text('Acknowledge')").click()
    page.wait_for_url(base + "/dashboard?notice=acknowledged")
    assert "Alert acknowledged" in page.inner_text(".notice")
    assert first not in visit.rows()
    assert len(visit.rows()) == before - 1
    assert first in visit.rows("#acknowledged")  # still open, shown apart
    visit.shot("acknowledged")
    flag = orjson.loads(fhir.read("Flag", first).content or "{}")
    assert flag["status"] == "active"
    assert any(e["url"].endswith("alert-acknowledged") for e in flag["extension"])
    visit.close()


def _tablet(server: tuple[str, FhirService, DemoSummary], browser: Any) -> None:
    base, fhir, demo = server
    visit = Visit(browser, base, TABLET, "tablet")
    page = visit.page
    visit.login()
    assert page.locator("#worklist thead").is_hidden()  # the table reflows into cards
    visit.shot("worklist")
    copd = demo.patients[1]
    page.locator("#worklist a", has_text=copd.name).first.click()
    page.wait_for_url(f"{base}/dashboard/patients/{copd.patient_id}")
    widths = [page.locator(f"svg#chart-{c}").bounding_box()["width"] for c in ("weight", "spo2")]
    assert all(w > TABLET["width"] * 0.8 for w in widths)  # one chart per row on a tablet
    assert page.locator("svg#chart-spo2 g.alert-marker").count() >= 1
    assert page.locator("svg#chart-spo2 g.threshold").count() >= 2
    visit.shot("patient")
    # resolve one of her open alerts from the patient page
    item = page.locator("#patient-alerts li.alert-item:not(.is-closed)").first
    flag_id = item.get_attribute("data-flag")
    item.locator("button:has-text('Resolve')").click()
    page.wait_for_url(f"{base}/dashboard/patients/{copd.patient_id}?days=30&notice=resolved")
    assert page.locator(f"#patient-alerts li[data-flag='{flag_id}'].is-closed").count() == 1
    page.click("nav[aria-label=Main] a:has-text('Alerts')")
    assert flag_id not in visit.rows() and flag_id not in visit.rows("#acknowledged")
    visit.shot("resolved")
    assert orjson.loads(fhir.read("Flag", str(flag_id)).content or "{}")["status"] == "inactive"
    # log out: the dashboard asks for a login again
    page.click("button:has-text('Log out')")
    page.wait_for_url(base + "/dashboard/login?notice=logged-out")
    page.goto(base + "/dashboard")
    assert page.url.startswith(base + "/dashboard/login")
    visit.close()
