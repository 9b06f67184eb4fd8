"""``telemon import`` and ``telemon demo`` through the typer CLI, on a fresh SQLite file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.settings import get_settings
from tests.factories import BSNS, patient, weight, when


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``TELEMON_DATABASE_URL`` at an SQLite file that does not exist yet (the CLI migrates)."""
    path = tmp_path / "cli.sqlite"
    monkeypatch.setenv("TELEMON_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("COLUMNS", "200")  # rich: keep table rows on one line
    monkeypatch.chdir(tmp_path)  # `telemon demo` writes its client credentials to ./demo-keys
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def test_import_reports_counts_and_reasons_with_exit_codes(cli_db: Path, tmp_path: Path) -> None:
    good = [patient(bsn=BSNS[0]) | {"id": "p"}]
    good += [weight("p", 75 + d / 10, when(d), ident=f"cli{d}") for d in range(3)]
    clean = tmp_path / "clean.ndjson"
    clean.write_text("\n".join(json.dumps(r) for r in good) + "\n")
    dirty = tmp_path / "dirty.ndjson"
    bad = weight("p", 75, when(4), ident="cli-bad")
    bad["valueQuantity"]["value"] = 999
    dirty.write_text("\n".join([json.dumps(good[0]), json.dumps(bad), "[1,"]) + "\n")
    runner = CliRunner()

    first = runner.invoke(app, ["import", str(clean)])
    again = runner.invoke(app, ["import", str(clean)])
    failed = runner.invoke(app, ["import", str(dirty)])

    assert first.exit_code == 0, first.output
    assert "│ created                   │         4 │" in first.output
    assert "│ skipped (already present) │         0 │" in first.output
    assert again.exit_code == 0
    assert "│ created                   │         0 │" in again.output
    assert "│ skipped (already present) │         4 │" in again.output
    assert failed.exit_code == 1
    assert "│ rejected                  │         2 │" in failed.output
    assert "line 2" in failed.output
    assert "Observation.valueQuantity.value" in failed.output
    assert "line 3" in failed.output


def test_demo_prints_patients_and_what_to_try(cli_db: Path) -> None:
    runner = CliRunner()

    first = runner.invoke(app, ["demo", "--weeks", "6"])
    again = runner.invoke(app, ["demo", "--weeks", "6"])

    assert first.exit_code == 0, first.output
    assert "Hendrik Jansen" in first.output
    assert "0 already present" in first.output
    assert "code=http://loinc.org|29463-7&_sort=-date" in first.output
    assert "Observation/$lastn?patient=" in first.output
    assert again.exit_code == 0
    assert "0 resources created" in again.output
