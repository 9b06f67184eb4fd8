"""Bulk Data export benchmark: a system ``$export`` of ≥ 1 M Observations on PostgreSQL, written
by a real ``telemon worker`` process. Prints NDJSON Observations/s, the worker's peak RSS and the
files' size; the floor is 50,000 Observations/s and 300 MiB (issue #15).

Setup is quick: a fresh ``telemon_bench_export`` database, one Patient and one Observation created
through the FHIR service (validated, stamped, as stored by telemon), then the rest generated from
them in SQL with ``generate_series`` (new ids, patients spread, values varied). Index-table rows
are not generated: an export reads the resource rows only. The database and the export files are
removed at the end (``--keep`` keeps the database).

    .venv/bin/python bench/export.py                      # 1,000,000 Observations
    .venv/bin/python bench/export.py --observations 2000000 --patients 20000
    .venv/bin/python bench/export.py --keep; .venv/bin/python bench/export.py --reuse
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import os
import shutil
import subprocess
import tempfile
import time

from sqlalchemy import create_engine, text

from bench.ingest import reset_database
from service.bootstrap import build_service
from service.bulk.jobs import BulkExports
from service.bulk.request import ExportParams
from service.settings import Settings
from service.storage import bulk_store, migrate
from service.storage.db import Database
from tests.factories import patient, weight, when

DEFAULT_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NAME = "telemon_bench_export"


def load(url: str, observations: int, patients: int) -> None:
    """Two resources through the service, then ``observations``/``patients`` copies in SQL."""
    settings = Settings(database_url=url, alerts_enabled=False)
    fhir = build_service(settings)
    pid = fhir.create(patient("123456782")).res_id
    oid = fhir.create(weight(pid, 80.5, when(1))).res_id
    fhir.db.dispose()
    started = time.perf_counter()
    engine = create_engine(url)
    with engine.begin() as conn:
        # The secondary indexes are built once afterwards instead of row by row.
        indexes = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'resources' "
                "AND indexname LIKE 'ix_%'"
            )
        ).all()
        for name, _ in indexes:
            conn.execute(text(f'DROP INDEX "{name}"'))
        # Patients: the template with a new id (the same BSN: an export does not mind).
        conn.execute(
            text(
                """
                INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted,
                                       patient_id, date_low, date_high, content)
                SELECT 'Patient', 'p-' || g, 1, t.last_updated + g, false, 'p-' || g,
                       t.date_low, t.date_high,
                       replace(t.content, :pid, 'p-' || g)
                FROM resources t, generate_series(1, :n) g
                WHERE t.res_type = 'Patient' AND t.res_id = :pid
                """
            ),
            {"pid": pid, "n": patients - 1},
        )
        # Observations: new id and identifier, a patient, the value and time varied per row.
        conn.execute(
            text(
                """
                INSERT INTO resources (res_type, res_id, version_id, last_updated, deleted,
                                       patient_id, date_low, date_high, content)
                SELECT 'Observation', 'o-' || g, 1, t.last_updated + g, false,
                       'p-' || (g % :patients), t.date_low - g * 60000000::bigint,
                       t.date_high - g * 60000000::bigint,
                       replace(replace(replace(t.content, :oid, 'o-' || g),
                                       :pid, 'p-' || (g % :patients)),
                               :old_value, '"value":' || round((600 + g % 400) / 10.0, 1))
                FROM resources t, generate_series(1, :n) g
                WHERE t.res_type = 'Observation' AND t.res_id = :oid
                """
            ),
            {
                "oid": oid,
                "pid": pid,
                "patients": patients,
                "n": observations - 1,
                "old_value": '"value":80.5',
            },
        )
        for _, definition in indexes:
            conn.execute(text(definition))
    engine.dispose()
    print(
        f"  generated {observations:,} Observations and {patients:,} Patients "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--admin-url", default=os.environ.get("TELEMON_TEST_PG_URL", DEFAULT_ADMIN))
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database.")
    parser.add_argument(
        "--reuse", action="store_true", help="Export the database a --keep run left."
    )
    args = parser.parse_args()

    if args.reuse:
        url = args.admin_url.rsplit("/", 1)[0] + f"/{NAME}"
    else:
        url = reset_database(args.admin_url, NAME)
    export_dir = Path(tempfile.mkdtemp(prefix="telemon-bench-export-"))
    worker = None
    try:
        if not args.reuse:
            db = Database(url, pool_size=2)
            migrate.upgrade(db)
            db.dispose()
            load(url, args.observations, args.patients)
        env = {
            **os.environ,
            "TELEMON_DATABASE_URL": url,
            "TELEMON_EXPORT_DIR": str(export_dir),
            "TELEMON_ALERTS_ENABLED": "false",
            "TELEMON_LOG_FORMAT": "text",
        }
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "telemon"), "worker", "--threads", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)  # let the worker start before the clock does
        settings = Settings(database_url=url, export_dir=export_dir, alerts_enabled=False)
        fhir = build_service(settings)
        exports = BulkExports(fhir)
        params = ExportParams("system", None, ("Patient", "Observation"))
        job_id = exports.kickoff(params, client_id="bench", request_url="bench", lenient=False)
        started = finished = None
        while finished is None:
            with fhir.db.read() as conn:
                row = bulk_store.get_job(conn, job_id)
            assert row is not None
            if row.status == "running" and started is None:
                started = time.perf_counter()
            if row.status in ("completed", "failed"):
                finished = time.perf_counter()
            time.sleep(0.02)
        assert row.status == "completed", row.error
        rss = peak_rss_mib(worker.pid)
        files = sorted((export_dir / job_id).glob("*.ndjson"))
        size = sum(f.stat().st_size for f in files)
        lines = sum(1 for f in files if f.name.startswith("Observation") for _ in f.open("rb"))
        fhir.db.dispose()
        seconds = finished - (started or finished)
        total = args.observations + args.patients
        print(
            f"  exported {lines:,} Observations (+{args.patients:,} Patients) into "
            f"{len(files)} files, {size / 2**20:,.0f} MiB"
        )
        print(
            f"  export: {seconds:.1f} s, {args.observations / seconds:,.0f} Observations/s "
            f"({total / seconds:,.0f} resources/s); worker peak RSS {rss:.0f} MiB"
        )
        assert lines == args.observations, "every Observation is exported once"
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        shutil.rmtree(export_dir, ignore_errors=True)
        if not args.keep:
            admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
