"""The ``telemon`` command line."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import orjson
import typer
from prometheus_client import start_http_server
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from service.alerts.ingest import AlertService
from service.auth import clients, ocl
from service.auth.clients import ClientError
from service.auth.jwks import JwksError, check_url
from service.bootstrap import build_service, open_database
from service.bulk.import_summary import OUTCOMES, ImportSummary
from service.bulk.importer import count_items, expand, import_paths
from service.bulk.jobs import BulkExports
from service.bulk.worker import ExportWorker
from service.demo.clients import (
    BACKEND_CLIENT_ID,
    BACKEND_SCOPE,
    DemoClientError,
    client_assertion,
    load_backend_key,
    register_demo_clients,
    request_backend_token,
)
from service.demo.data import load_demo
from service.demo.guide import DEFAULT_KEYS_DIR, Endpoints, guide
from service.fhir.service import FhirService
from service.runtime import logs, serving
from service.settings import get_settings
from service.storage import migrate
from service.storage.db import Database
from service.subscriptions.worker import DeliveryWorker

app = typer.Typer(
    help="telemon: FHIR R4 telemonitoring data-exchange service.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
alerts_app = typer.Typer(help="Alert commands.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
clients_app = typer.Typer(
    help="OAuth client registrations: PGO apps and backend services.", no_args_is_help=True
)
app.add_typer(clients_app, name="clients")
demo_app = typer.Typer()
app.add_typer(demo_app, name="demo")


def _database() -> Database:
    s = get_settings()
    return Database(s.database_url, sqlite_synchronous=s.sqlite_synchronous, pool_size=2)


def _ensure_schema(db: Database, *, migrate_schema: bool = False) -> None:
    """Migrate SQLite (or on request); refuse (exit 3) a PostgreSQL schema that is not current."""
    if db.embedded or migrate_schema:
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
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes (default: one per CPU core this process may use; SQLite "
            "too, it runs in WAL mode).",
            min=1,
        ),
    ] = None,
    migrate_schema: Annotated[
        bool, typer.Option("--migrate", help="Apply pending migrations (PostgreSQL).")
    ] = False,
) -> None:
    """Run the FHIR server."""
    settings = get_settings()
    log_format = settings.log_format or "json"
    logs.configure(log_format)
    problem = settings.serving_problem()
    if problem is not None:
        typer.echo(f"Refusing to serve: {problem}", err=True)
        raise typer.Exit(2)
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
    serving.serve(
        host,
        port,
        workers=workers or serving.default_workers(),
        log_format=log_format,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


@app.command()
def worker(
    threads: Annotated[
        int, typer.Option(min=1, help="Delivery threads (subscriptions delivered at once).")
    ] = 2,
    metrics_port: Annotated[
        int, typer.Option(help="Serve Prometheus /metrics on this port (0: off).")
    ] = 0,
    metrics_host: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "127.0.0.1",
) -> None:
    """Deliver Subscription notifications and write Bulk Data exports until stopped
    (SIGTERM/SIGINT).

    Run as many as you like against PostgreSQL: a subscription is delivered by one worker at a
    time, in order, and an export is written by one worker. On SQLite `telemon serve` does both
    itself (TELEMON_DELIVERY_WORKER, TELEMON_EXPORT_WORKER).
    """
    settings = get_settings()
    logs.configure(settings.log_format or "json")
    db = open_database(settings, pool_size=threads + 4)
    stopping = threading.Event()
    try:
        _ensure_schema(db)
        if metrics_port:
            start_http_server(metrics_port, addr=metrics_host)
        fhir = build_service(settings, db)
        delivery = DeliveryWorker(fhir, threads=threads)
        exporter = ExportWorker(BulkExports(fhir))
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
        delivery.start()
        exporter.start()
        typer.echo(
            f"Delivering Subscription notifications with {threads} thread(s); writing exports "
            f"to {settings.export_dir}.",
            err=True,
        )
        while not stopping.wait(1.0):
            pass
        exporter.stop()
        delivery.stop()
    finally:
        db.dispose()


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
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="NDJSON files (one resource per line), Bundle or resource JSON files, and "
            "directories holding them (e.g. a FHIR Bulk Data export); imported in one run, "
            "in dependency order.",
            exists=True,
            readable=True,
        ),
    ],
    skip_unsupported: Annotated[
        bool,
        typer.Option(
            "--skip-unsupported",
            help="Import the supported resources of files and Bundles that also hold types "
            "telemon does not store (Encounter, Claim …), and count those as skipped.",
        ),
    ] = False,
    show: Annotated[int, typer.Option(help="How many rejections to list one by one.")] = 10,
) -> None:
    """Import resources idempotently; exit code 1 if any were rejected."""
    out = Console(highlight=False)
    files, _ = expand(paths)
    counts = [count_items(f) for f in files]
    total = None if None in counts else sum(c or 0 for c in counts)
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
        what = files[0].name if len(files) == 1 else f"{len(files)} files"
        task = bar.add_task(f"Importing {what}", total=total)
        summary = import_paths(
            service,
            paths,
            skip_unsupported=skip_unsupported,
            progress=lambda n: bar.advance(task, n),
        )
    for table in import_tables(summary, show):
        out.print(table)
    for note in summary.notes:
        out.print(Text(note))
    raise typer.Exit(1 if summary.rejected else 0)


def import_tables(summary: ImportSummary, show: int) -> list[Table]:
    """The tables ``telemon import`` prints: counts per type, reasons, the first rejections."""
    names = ", ".join(p.name for p in summary.files[:3])
    if len(summary.files) > 3:
        names += f" and {len(summary.files) - 3} more"
    counts = Table(title=Text(f"Import of {len(summary.files)} file(s): {names}"))
    counts.add_column("Resource type")
    for outcome in OUTCOMES:
        counts.add_column(outcome, justify="right")
    for res_type in sorted(summary.counts):
        counts.add_row(res_type, *(str(summary.counts[res_type][o]) for o in OUTCOMES))
    counts.add_row("all", *(str(summary.total(o)) for o in OUTCOMES), style="bold")
    tables = [counts]
    if summary.reasons:
        reasons = Table(title="Skipped and rejected, per type and reason")
        for column in ("Resource type", "Result", "Reason", "Count", "First at"):
            reasons.add_column(column, justify="right" if column == "Count" else "left")
        for (res_type, outcome, reason), tally in sorted(summary.reasons.items()):
            first = tally.first + (f": {tally.example}" if tally.example else "")
            # Text, not markup: diagnostics contain brackets such as '[lb_av]'.
            reasons.add_row(res_type, outcome, Text(reason), str(tally.count), Text(first))
        tables.append(reasons)
    listed = summary.rejections[: max(show, 0)]
    if listed:
        each = Table(title=f"Rejections (first {len(listed)} of {len(summary.rejections)})")
        for column in ("Where", "Status", "Reason"):
            each.add_column(column)
        for rejection in listed:
            each.add_row(rejection.where, str(rejection.status), Text(rejection.describe()))
        tables.append(each)
    if summary.ignored:
        ignored = Table(title="Ignored (not .json, .ndjson or .jsonl)")
        ignored.add_column("File")
        for path in summary.ignored:
            ignored.add_row(Text(str(path)))
        tables.append(ignored)
    return tables


KeysDir = Annotated[
    Path,
    typer.Option(
        "--keys-dir",
        help="Folder for the demo clients' credentials (PGO secret, backend key pair).",
        file_okay=False,
    ),
]


@demo_app.callback(invoke_without_command=True)
def demo(
    ctx: typer.Context,
    seed: Annotated[int, typer.Option(help="Seed of the generated values.")] = 7,
    weeks: Annotated[int, typer.Option(min=6, help="Weeks of measurements per patient.")] = 8,
    keys_dir: KeysDir = DEFAULT_KEYS_DIR,
) -> None:
    """Load demo patients with weeks of home measurements, register a demo PGO and EHR client,
    and print what to open and try (running it again adds nothing)."""
    if ctx.invoked_subcommand is not None:
        return
    out = Console(highlight=False)
    with _service() as service:
        summary = load_demo(service, seed=seed, weeks=weeks)
        with service.db.write() as conn:
            demo_clients = register_demo_clients(conn, keys_dir)
        settings = service.settings
    table = Table(
        title=f"Demo patients, measurements {summary.first_day} to {summary.last_day}",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("Patient", no_wrap=True)
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
    verifier = secrets.token_urlsafe(48)
    lines = guide(
        summary,
        demo_clients,
        _endpoints(),
        auth=settings.auth,
        program=_program(),
        verifier=verifier,
    )
    typer.echo("\n" + "\n".join(lines))


def _endpoints() -> Endpoints:
    """Where `telemon serve` answers, by the settings (default: its own default address)."""
    settings = get_settings()
    base = (settings.base_url or "http://127.0.0.1:8080/fhir").rstrip("/")
    issuer = (settings.issuer or base.removesuffix("/fhir")).rstrip("/")
    return Endpoints(base, issuer)


def _program() -> str:
    """How the user called telemon (`.venv/bin/telemon` under `make run`), for printed commands."""
    called = sys.argv[0]
    return called if Path(called).name == "telemon" else "telemon"


@demo_app.command("token")
def demo_token(
    keys_dir: KeysDir = DEFAULT_KEYS_DIR,
    scope: Annotated[
        str, typer.Option(help="Scopes to ask for (default: all the demo EHR's scopes).")
    ] = BACKEND_SCOPE,
    assertion: Annotated[
        bool,
        typer.Option(
            "--assertion", help="Print a signed client assertion instead (no request is made)."
        ),
    ] = False,
) -> None:
    """Print an access token for the demo EHR (backend service), signed with the demo key.

    Use it as `TOKEN=$(telemon demo token)`; the server must run with TELEMON_AUTH=oauth.
    """
    # httpx logs every request at INFO; here that would only clutter the terminal.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    where = _endpoints()
    try:
        key = load_backend_key(keys_dir)
        if assertion:
            typer.echo(client_assertion(key, BACKEND_CLIENT_ID, where.token_url))
            return
        answer = request_backend_token(where.token_url, key, BACKEND_CLIENT_ID, scope)
    except DemoClientError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(answer["access_token"])


@alerts_app.command("sweep")
def alerts_sweep() -> None:
    """Evaluate the missing-data rules now (idempotent; safe to run from cron)."""
    with _service() as fhir:
        summary = AlertService(fhir).sweep()
    typer.echo(f"Swept {summary.patients} enrolled patients: {summary.changes} alert changes.")


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` on stderr; the exit to raise."""
    typer.echo(message, err=True)
    return typer.Exit(code)


def _exists(db: Database, client_id: str) -> bool:
    with db.read() as conn:
        return clients.get(conn, client_id, include_inactive=True) is not None


@clients_app.command("add-pgo")
def clients_add_pgo(
    client_id: Annotated[
        str, typer.Option("--client-id", help="The PGO's hostname (its MedMij client id).")
    ],
    name: Annotated[str, typer.Option("--name", help="Organisation name shown at consent.")],
    redirect_uri: Annotated[
        list[str],
        typer.Option("--redirect-uri", help="A redirect URI (exact match; repeat for more)."),
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="Re-register an existing client (new secret).")
    ] = False,
) -> None:
    """Register a PGO (confidential client, authorization code + PKCE); prints its secret once."""
    try:
        client, secret = clients.new_pgo(client_id, name, redirect_uri)
    except ClientError as exc:
        raise _fail(f"Refused: {exc}") from exc
    with _registry() as db:
        if _exists(db, client_id) and not replace:
            raise _fail(f"Client '{client_id}' is already registered; use --replace to renew it.")
        with db.write() as conn:
            clients.save(conn, client)
    typer.echo(f"Registered PGO '{client_id}' ({name}); redirect URIs: {', '.join(redirect_uri)}")
    typer.echo(f"Client secret (shown only now; telemon keeps a hash): {secret}")


@clients_app.command("add-backend")
def clients_add_backend(
    client_id: Annotated[str, typer.Option("--client-id", help="The backend client's id.")],
    scope: Annotated[
        str, typer.Option("--scope", help='SMART v2 system scopes, e.g. "system/Observation.rs".')
    ],
    jwks_file: Annotated[
        Path | None,
        typer.Option(
            "--jwks-file", help="A JWKS with the public key(s).", exists=True, dir_okay=False
        ),
    ] = None,
    jwks_url: Annotated[
        str | None, typer.Option("--jwks-url", help="An https URL serving the JWKS.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Re-register an existing client.")
    ] = False,
) -> None:
    """Register a SMART backend service (client_credentials with private_key_jwt)."""
    if (jwks_file is None) == (jwks_url is None):
        raise _fail("Give exactly one of --jwks-file or --jwks-url.", 2)
    try:
        jwks = orjson.loads(jwks_file.read_bytes()) if jwks_file is not None else None
    except orjson.JSONDecodeError as exc:
        raise _fail(f"Refused: {jwks_file} is not JSON ({exc})") from exc
    try:
        if jwks_url is not None:
            check_url(jwks_url, allow_private=get_settings().jwks_allow_private)
        client = clients.new_backend(
            client_id, name or client_id, scope, jwks=jwks, jwks_url=jwks_url
        )
    except (ClientError, JwksError) as exc:
        raise _fail(f"Refused: {exc}") from exc
    with _registry() as db:
        if _exists(db, client_id) and not replace:
            raise _fail(f"Client '{client_id}' is already registered; use --replace to renew it.")
        with db.write() as conn:
            clients.save(conn, client)
    count = len((client.jwks or {}).get("keys", []))
    keys = f"JWKS URL {jwks_url}" if jwks_url else f"{count} key(s) from {jwks_file}"
    typer.echo(f"Registered backend '{client_id}' with {keys}; scopes: {client.scope}")


@clients_app.command("import-ocl")
def clients_import_ocl(
    file: Annotated[
        Path,
        typer.Argument(
            help="A MedMij OAuth Client List (XML).", exists=True, dir_okay=False, readable=True
        ),
    ],
) -> None:
    """Register or update the PGOs of a MedMij OAuth Client List (idempotent)."""
    try:
        entries = ocl.parse(file.read_bytes())
    except ocl.OclError as exc:
        raise _fail(f"Refused {file}: {exc}") from exc
    with _registry() as db, db.write() as conn:
        result = ocl.import_clients(conn, entries)
    for client_id, secret in result.created:
        typer.echo(f"created  {client_id}  secret (shown only now): {secret}")
    for client_id in result.updated:
        typer.echo(f"updated  {client_id}")
    for client_id in result.skipped:
        typer.echo(f"skipped  {client_id} (unchanged)")
    for client_id, reason in result.rejected:
        typer.echo(f"rejected {client_id}: {reason}", err=True)
    typer.echo(
        f"{len(result.created)} created, {len(result.updated)} updated, "
        f"{len(result.skipped)} skipped, {len(result.rejected)} rejected."
    )
    raise typer.Exit(1 if result.rejected else 0)


@clients_app.command("disable")
def clients_disable(
    client_id: Annotated[str, typer.Option("--client-id", help="The client to disable.")],
) -> None:
    """Disable a client: it gets no new tokens, and its tokens stop working within a second."""
    _set_active(client_id, False, f"Disabled '{client_id}'; its access tokens are revoked.")


@clients_app.command("enable")
def clients_enable(
    client_id: Annotated[str, typer.Option("--client-id", help="The client to enable.")],
) -> None:
    """Enable a disabled client again (tokens revoked when it was disabled stay revoked)."""
    _set_active(client_id, True, f"Enabled '{client_id}'.")


def _set_active(client_id: str, active: bool, done: str) -> None:
    with _registry() as db, db.write() as conn:
        found = clients.set_active(conn, client_id, active)
    if not found:
        raise _fail(f"No client '{client_id}' is registered.")
    typer.echo(done)


@clients_app.command("list")
def clients_list() -> None:
    """List the registered clients."""
    with _registry() as db, db.read() as conn:
        registered = clients.all_clients(conn)
    table = Table(title=f"{len(registered)} registered OAuth clients")
    table.add_column("Client id", no_wrap=True)
    for column in ("Kind", "Name", "Redirect URIs / keys", "Scopes", "Active"):
        table.add_column(column)
    for c in registered:
        if c.kind == "pgo":
            where = "\n".join(c.redirect_uris)
        else:
            where = c.jwks_url or f"{len((c.jwks or {}).get('keys', []))} inline key(s)"
        table.add_row(
            c.client_id, c.kind, c.name, where, c.scope.replace(" ", "\n"), str(c.active)
        )
    Console(highlight=False).print(table)


@contextmanager
def _registry() -> Iterator[Database]:
    """The configured database, its schema checked (no FHIR service needed for clients)."""
    db = open_database(get_settings(), pool_size=2)
    try:
        _ensure_schema(db)
        yield db
    finally:
        db.dispose()


@contextmanager
def _service() -> Iterator[FhirService]:
    """The FHIR service on the configured database, its schema checked (see ``serve``)."""
    settings = get_settings()
    with _registry() as db:
        yield build_service(settings, db)


def main() -> None:
    """Entry point of the ``telemon`` console script."""
    logs.configure(get_settings().log_format or "text")  # `serve` switches to json by default
    app()


if __name__ == "__main__":
    main()
