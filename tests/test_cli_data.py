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
from tests.test_realdata import REALDATA


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


def _rows(output: str) -> list[list[str]]:
    """The cells of every table row rich printed (one line per row: COLUMNS is wide)."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


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
    assert _rows(first.output) == [
        ["Observation", "3", "0", "0", "0"], ["Patient", "1", "0", "0", "0"],
        ["all", "4", "0", "0", "0"],
    ]  # fmt: skip
    assert again.exit_code == 0
    assert ["all", "0", "0", "4", "0"] in _rows(again.output)
    assert ["Observation", "skipped", "already present (same identifier)", "3",
            "clean.ndjson line 2"] in _rows(again.output)  # fmt: skip
    assert failed.exit_code == 1
    rows = _rows(failed.output)
    assert ["all", "0", "0", "1", "2"] in rows
    reasons = {(r[0], r[2]): r[3] for r in rows if len(r) == 5 and r[1] == "rejected"}
    assert reasons == {
        ("Observation", "422 value at Observation.valueQuantity.value"): "1",
        ("(unreadable)", "400 structure"): "1",
    }
    assert "dirty.ndjson line 2" in failed.output
    assert "dirty.ndjson line 3" in failed.output


def test_import_takes_several_paths_and_skips_unsupported_types(cli_db: Path) -> None:
    bulk = [REALDATA / "bulk-export" / f"{t}.000.ndjson" for t in ("Observation", "Patient")]
    devices = REALDATA / "bulk-export" / "Device.000.ndjson"
    runner = CliRunner()

    refused = runner.invoke(app, ["import", str(REALDATA / "synthea-r4")])
    synthea = REALDATA / "synthea-r4"
    done = runner.invoke(
        app, ["import", "--skip-unsupported", *map(str, bulk), str(synthea), str(devices)]
    )

    assert refused.exit_code == 1
    assert ["all", "0", "0", "0", "70"] in _rows(refused.output)
    assert done.exit_code == 0, done.output
    rows = _rows(done.output)
    assert ["Observation", "228", "0", "0", "0"] in rows
    assert ["Patient", "6", "0", "0", "0"] in rows
    assert ["Device", "10", "0", "0", "0"] in rows
    assert ["Encounter", "0", "0", "3", "0"] in rows
    assert ["Practitioner", "1", "0", "0", "0"] in rows
    assert ["all", "245", "0", "20", "0"] in rows
    assert "Import of 4 file(s)" in done.output


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


def test_flags_show_no_value_placeholder_in_help() -> None:
    """A flag takes no value, so ``--help`` must not print one after it (typer 0.29 did)."""
    result = CliRunner().invoke(app, ["import", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "--skip-unsupported" in result.output
    assert "<bool>" not in result.output
