"""The ``telemon`` command line."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from service.alerts.ingest import AlertService
from service.bootstrap import build_service, open_database
from service.demo import LOINC_CODES, load_demo
from service.fhir.service import FhirService
from service.importer import count_items, import_file
from service.settings import get_settings
from service.storage import migrate
from service.storage.db import Database
from service.validation import BSN_SYSTEM

app = typer.Typer(
    help="telemon: FHIR R4 telemonitoring data-exchange service.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
alerts_app = typer.Typer(help="Alert commands.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


def _database() -> Database:
    s = get_settings()
    return Database(s.database_url, sqlite_synchronous=s.sqlite_synchronous, pool_size=2)


def _ensure_schema(db: Database, *, migrate_schema: bool = False) -> None:
    """Migrate SQLite (or on request); refuse (exit 3) a PostgreSQL schema that is not current."""
    if db.is_sqlite or migrate_schema:
        migrate.upgrade(db)
    elif not migrate.is_current(db):
        typer.echo(
            f"The database schema is at revision {migrate.current_revision(db) or '(empty)'}"
            f"; this telemon needs {migrate.head_revision(db)}. Run `telemon db upgrade` "
            "or start with `telemon serve --migrate`.",
            err=True,
        )
        raise typer.Exit(3)


def is_loopback(host: str) -> bool:
    """True when ``host`` names only loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    migrate_schema: Annotated[
        bool, typer.Option("--migrate", help="Apply pending migrations (PostgreSQL).")
    ] = False,
) -> None:
    """Run the FHIR server."""
    settings = get_settings()
    if settings.auth == "open":
        if not is_loopback(host):
            typer.echo(
                f"Refusing to serve with TELEMON_AUTH=open on non-loopback address '{host}': "
                "open mode has no authorization. Use 127.0.0.1.",
                err=True,
            )
            raise typer.Exit(2)
        typer.echo("WARNING: TELEMON_AUTH=open: no authorization. For local demos only.", err=True)
    db = _database()
    try:
        _ensure_schema(db, migrate_schema=migrate_schema)
    finally:
        db.dispose()
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations."""
    db = _database()
    try:
        before = migrate.current_revision(db)
        migrate.upgrade(db)
        typer.echo(
            f"Database at revision {migrate.current_revision(db)} (was {before or 'empty'})."
        )
    finally:
        db.dispose()


@app.command("import")
def import_(
    file: Annotated[
        Path,
        typer.Argument(
            help="An NDJSON file (one resource per line) or a Bundle/resource JSON file.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    show: Annotated[int, typer.Option(help="How many rejection reasons to list.")] = 10,
) -> None:
    """Import resources idempotently; exit code 1 if any were rejected."""
    out = Console(highlight=False)
    with (
        _service() as service,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        ) as bar,
    ):
        task = bar.add_task(f"Importing {file.name}", total=count_items(file))
        summary = import_file(service, file, progress=lambda n: bar.advance(task, n))
    table = Table(title=Text(f"Import of {file}"))
    table.add_column("Result")
    table.add_column("Resources", justify="right")
    table.add_row("created", str(summary.created))
    if summary.updated:
        table.add_row("updated", str(summary.updated))
    table.add_row("skipped (already present)", str(summary.skipped))
    table.add_row("rejected", str(summary.rejected))
    out.print(table)
    if summary.rejections:
        listed = summary.rejections[: max(show, 0)]
        reasons = Table(title=f"Rejections (first {len(listed)} of {len(summary.rejections)})")
        reasons.add_column("Where")
        reasons.add_column("Status")
        reasons.add_column("Reason")
        for rejection in listed:
            # Text, not markup: diagnostics contain brackets such as '[lb_av]'.
            reasons.add_row(rejection.where, str(rejection.status), Text(rejection.describe()))
        out.print(reasons)
    raise typer.Exit(1 if summary.rejected else 0)


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Seed of the generated values.")] = 7,
    weeks: Annotated[int, typer.Option(min=6, help="Weeks of measurements per patient.")] = 8,
) -> None:
    """Load demo patients with weeks of home measurements (running it again adds nothing)."""
    out = Console(highlight=False)
    with _service() as service:
        summary = load_demo(service, seed=seed, weeks=weeks)
        base = (service.settings.base_url or "http://127.0.0.1:8080/fhir").rstrip("/")
    table = Table(title=f"Demo patients, measurements {summary.first_day} to {summary.last_day}")
    table.add_column("Patient")
    table.add_column("Id", no_wrap=True, min_width=36)  # people copy it into URLs
    table.add_column("BSN", no_wrap=True)
    table.add_column("Condition", no_wrap=True)
    table.add_column("Obs.", justify="right")
    for p in summary.patients:
        conditions = " + ".join("HF" if c == "heart failure" else c for c in p.conditions)
        table.add_row(p.name, p.patient_id, p.bsn, conditions, str(p.observations))
    out.print(table)
    for p in summary.patients:
        out.print(f"{p.name}: {p.story}")
    out.print(f"{summary.created} resources created, {summary.skipped} already present.")
    hf, copd = summary.patients[0], summary.patients[1]
    typer.echo("\nTry it (with `telemon serve` running):")
    for line in (
        f"# {hf.name}'s weights, newest first",
        f"curl -s '{base}/Observation?patient={hf.patient_id}"
        f"&code=http://loinc.org|{LOINC_CODES['weight']}&_sort=-date&_count=7'",
        f"# {hf.name}'s latest three of every vital sign",
        f"curl -s '{base}/Observation/$lastn?patient={hf.patient_id}&category=vital-signs&max=3'",
        f"# {copd.name}'s oxygen saturation, newest first",
        f"curl -s '{base}/Observation?patient={copd.patient_id}"
        f"&code=http://loinc.org|{LOINC_CODES['spo2']}&_sort=-date&_count=7'",
        "# a patient by BSN",
        f"curl -s '{base}/Patient?identifier={BSN_SYSTEM}|{hf.bsn}'",
    ):
        typer.echo(line)


@alerts_app.command("sweep")
def alerts_sweep() -> None:
    """Evaluate the missing-data rules now (idempotent; safe to run from cron)."""
    with _service() as fhir:
        summary = AlertService(fhir).sweep()
    typer.echo(f"Swept {summary.patients} enrolled patients: {summary.changes} alert changes.")


@contextmanager
def _service() -> Iterator[FhirService]:
    """The FHIR service on the configured database, its schema checked (see ``serve``)."""
    settings = get_settings()
    db = open_database(settings, pool_size=2)
    try:
        _ensure_schema(db)
        yield build_service(settings, db)
    finally:
        db.dispose()


def main() -> None:
    """Entry point of the ``telemon`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app()


if __name__ == "__main__":
    main()
