"""GEN-MISSING: the missing-data sweep (``AlertService.sweep`` and ``telemon alerts sweep``).

The sweep takes its ``now`` as a parameter, so days of silence are simulated by sweeping at a
later moment; Flags are read back through the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from typer.testing import CliRunner

from service.alerts import ingest
from service.alerts.ingest import AlertService
from service.bootstrap import build_service
from service.cli import app
from service.settings import Settings, get_settings
from tests.alerts_api.conftest import BASE, Api, at, priority, score, text, weight

MISSING = "GEN-MISSING"


@pytest.fixture
def sweeper(settings: Settings) -> Iterator[AlertService]:
    """An AlertService over its own FHIR service, as the CLI and the server build it."""
    fhir = build_service(settings)
    yield AlertService(fhir)
    fhir.db.dispose()


def later(days: int) -> datetime:
    """BASE plus whole local days."""
    return BASE + timedelta(days=days)


def test_missing_weights_and_questionnaires(api: Api, sweeper: AlertService) -> None:
    """HF: 2 days without a weight → info, 3 → orange; COPD questionnaire overdue; pauses."""
    hf = api.enrol(programmes="HF")
    copd = api.enrol(programmes="COPD")
    paused = api.enrol(programmes="HF", pause=(at(1), None))
    # a date-only end includes that whole local day: the pause ends when day +2 begins
    pause_ended = api.enrol(programmes="HF", pause=(at(1), later(1).date().isoformat()))
    bystander = api.patient()  # not enrolled: never swept
    for pid in (hf, paused, pause_ended, bystander):
        api.post(weight(pid, 80.0, at(0)))
    api.post(score(copd, "cat-total", 12, at(0)))

    summary = sweeper.sweep(now=later(2))  # one whole day without a weight
    assert (summary.patients, summary.changes) == (4, 0)
    assert api.flags(hf, MISSING) == []

    summary = sweeper.sweep(now=later(3))
    assert (summary.patients, summary.changes) == (4, 1)
    flag = api.flag(hf, MISSING)
    assert flag is not None and flag["status"] == "active" and priority(flag) == "PL"
    assert text(flag) == "Measurements missing: no weight for 2 days"
    assert sweeper.sweep(now=later(3)).changes == 0  # idempotent
    assert sweeper.sweep(now=later(3) - timedelta(minutes=30)).changes == 0  # same day

    summary = sweeper.sweep(now=later(4))
    flag_id = flag["id"]
    flag = api.flag(hf, MISSING)
    assert flag is not None and flag["id"] == flag_id and priority(flag) == "PM"
    assert text(flag) == "Measurements missing: no weight for 3 days"
    # after the pause ended only the days since count: 2 days → info
    ended = api.flag(pause_ended, MISSING)
    assert ended is not None and text(ended) == "Measurements missing: no weight for 2 days"
    assert summary.changes == 2
    assert api.flags(paused) == [] and api.flags(bystander) == []

    sweeper.sweep(now=later(9))  # COPD: weekly questionnaire 2 days overdue, 8 days silent
    flag = api.flag(copd, MISSING)
    assert flag is not None and priority(flag) == "PM"
    assert text(flag) == (
        "Measurements missing: questionnaire overdue by 2 days; no measurements at all for 8 days"
    )
    assert api.flags(paused) == []


def test_new_data_resolves_the_missing_data_alert(api: Api, sweeper: AlertService) -> None:
    """The next sweep after a measurement arrives closes the episode; then nothing changes."""
    pid = api.enrol(programmes="HF")
    api.post(weight(pid, 80.0, at(5)))
    # Swept at BASE, the day the measurements count from (not the real now, which in the
    # small hours is a local day later).
    assert sweeper.sweep(now=later(0)).changes == 1
    flag = api.flag(pid, MISSING)
    assert flag is not None and priority(flag) == "PM"
    assert "Measurements missing: no weight for 4 days" in text(flag)
    api.post(weight(pid, 80.2, at(0)))
    assert sweeper.sweep(now=later(0)).changes == 1
    flag = api.flag(pid, MISSING)
    assert flag is not None and flag["status"] == "inactive" and "end" in flag["period"]
    assert sweeper.sweep(now=later(0)).changes == 0


def test_cli_sweep_prints_the_summary(
    api: Api, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``telemon alerts sweep`` on the configured database; a second run changes nothing."""
    pid = api.enrol(programmes="HF")
    api.post(weight(pid, 80.0, at(5)))
    monkeypatch.setenv("TELEMON_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TELEMON_AUTH", "open")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        first = runner.invoke(app, ["alerts", "sweep"])
        assert first.exit_code == 0, first.output
        assert "Swept 1 enrolled patients: 1 alert changes." in first.output
        second = runner.invoke(app, ["alerts", "sweep"])
        assert "Swept 1 enrolled patients: 0 alert changes." in second.output
    finally:
        get_settings.cache_clear()
    flag = api.flag(pid, MISSING)
    assert flag is not None and priority(flag) == "PM"


def test_missing_data_alert_declared_an_error_stays_so(api: Api, sweeper: AlertService) -> None:
    """The EHR marks GEN-MISSING entered-in-error: later sweeps that day leave it alone."""
    pid = api.enrol(programmes="HF")
    api.post(weight(pid, 80.0, at(0)))
    assert sweeper.sweep(now=later(4)).changes == 1
    flag = api.flag(pid, MISSING)
    assert flag is not None
    api.put({**{k: v for k, v in flag.items() if k != "meta"}, "status": "entered-in-error"})
    assert sweeper.sweep(now=later(4) - timedelta(minutes=30)).changes == 0
    flag = api.flag(pid, MISSING)
    assert flag is not None and flag["status"] == "entered-in-error"
    sweeper.sweep(now=later(5))  # a new day, still no weight: a new alert
    active = api.flags(pid, MISSING, status="active")
    assert len(active) == 1 and text(active[0]) == "Measurements missing: no weight for 4 days"


def test_sweep_reads_every_page_of_care_plans(
    api: Api, sweeper: AlertService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More enrolled patients than one page of CarePlans: all are swept (here pages of 2)."""
    monkeypatch.setattr(ingest, "PAGE_SIZE", 2)
    patients = [api.enrol(programmes="HF") for _ in range(5)]
    for pid in patients:
        api.post(weight(pid, 80.0, at(0)), weight(pid, 80.1, at(0, minutes=1)),
                 weight(pid, 80.2, at(0, minutes=2)))
    summary = sweeper.sweep(now=later(4))
    assert (summary.patients, summary.changes) == (5, 5)
    for pid in patients:
        flag = api.flag(pid, MISSING)
        assert flag is not None and text(flag) == "Measurements missing: no weight for 3 days"
