"""The ``telemon`` command line."""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Annotated

import typer
import uvicorn

from service.settings import get_settings
from service.storage import migrate
from service.storage.db import Database

app = typer.Typer(help="telemon: FHIR R4 telemonitoring data-exchange service.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _database() -> Database:
    s = get_settings()
    return Database(s.database_url, sqlite_synchronous=s.sqlite_synchronous, pool_size=2)


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
        typer.echo(
            "WARNING: TELEMON_AUTH=open: no authorization. For local demos only.", err=True
        )
    db = _database()
    try:
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
        typer.echo(f"Database at revision {migrate.current_revision(db)} (was {before or 'empty'}).")
    finally:
        db.dispose()


def main() -> None:
    """Entry point of the ``telemon`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app()


