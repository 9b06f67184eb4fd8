"""The rate of ``telemon import`` (in-process, :func:`service.bulk.importer.import_paths`).

Writes a FHIR Bulk Data shaped export — ``Patient.000.ndjson`` and ``Observation.000.ndjson``
whose Observations refer to the Patients by their ids in the file, so the run's id map is
used — into a fresh PostgreSQL database (or SQLite with ``--url``), imports it and prints the
rate with the machine's load. ``--profile`` prints the top of a cProfile of the import.

    .venv/bin/python bench/import_rate.py --observations 50000 --patients 50
    .venv/bin/python bench/import_rate.py --observations 5000 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import ingest
from service.bootstrap import build_service
from service.bulk.importer import import_paths
from service.settings import Settings
from service.storage import migrate


def write_export(folder: Path, patients: int, observations: int) -> None:
    """An export of ``patients`` Patients and ``observations`` Observations over a year."""
    rng = random.Random(13)
    now = datetime.now(UTC) - timedelta(hours=1)
    with (folder / "Patient.000.ndjson").open("wb") as out:
        for p in range(patients):
            patient = {
                "resourceType": "Patient",
                "id": f"p{p}",
                "identifier": [{"system": "urn:telemon:bench-import", "value": f"p{p}"}],
                "name": [{"family": f"Bench{p}"}],
            }
            out.write(orjson.dumps(patient) + b"\n")
    step = timedelta(days=365) / max(1, observations // max(1, patients))
    with (folder / "Observation.000.ndjson").open("wb") as out:
        for i in range(observations):
            when = now - step * (i // patients) - timedelta(minutes=rng.randint(0, 30))
            obs = ingest.observation(f"p{i % patients}", when, rng)
            out.write(orjson.dumps(obs) + b"\n")


def main() -> None:
    """Generate, import, print the rate."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--database", default="telemon_bench_import")
    parser.add_argument("--url", help="import into this database as it is (e.g. sqlite:///x.db)")
    parser.add_argument("--observations", type=int, default=50_000)
    parser.add_argument("--patients", type=int, default=50)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the import")
    args = parser.parse_args()
    url = args.url or ingest.reset_database(args.admin_url, args.database)
    service = build_service(Settings(database_url=url))
    migrate.upgrade(service.db)
    with TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_export(folder, args.patients, args.observations)
        load = os.getloadavg()[0]
        profiler = cProfile.Profile() if args.profile else None
        t0 = time.perf_counter()
        if profiler:
            profiler.enable()
        summary = import_paths(service, [folder])
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - t0
    created = sum(c["created"] for c in summary.counts.values())
    print(
        f"telemon import of {args.patients:,} Patients + {args.observations:,} Observations "
        f"({created:,} created, {len(summary.rejections)} rejected) in {seconds:,.1f} s: "
        f"{args.observations / seconds:,.0f} Observations/s; load average {load:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after, {os.cpu_count()} cores",
        flush=True,
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats("service", 40)
    service.db.dispose()


if __name__ == "__main__":
    main()
