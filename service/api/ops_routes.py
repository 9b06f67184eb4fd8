"""Operations endpoints: liveness, readiness and Prometheus metrics
(:mod:`service.runtime.metrics`).

They sit outside ``/fhir`` on a router without the FHIR dependencies: no OAuth token, no
content negotiation and no AuditEvents, since probes and scrapers call them every few seconds and
they are not accesses to patient data. ``/health`` and ``/ready`` are open to all; ``/metrics``
in oauth mode only to the scraper (``TELEMON_METRICS_TOKEN``) unless ``TELEMON_PUBLIC_METRICS``.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from service.api.deps import get_state
from service.core.outcome import FhirError
from service.runtime import metrics
from service.settings import Settings
from service.storage import migrate, subscription_store
from service.storage.db import Database, StorageError

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

_NO_STORE = {"Cache-Control": "no-store"}


@router.get("/health")
async def health() -> JSONResponse:
    """Liveness: the process runs and its event loop answers (no database access)."""
    return JSONResponse({"status": "ok"}, headers=_NO_STORE)


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 when the database answers and its schema is current, else 503."""
    checks = await run_in_threadpool(readiness_checks, get_state(request).fhir.db)
    ok = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
        headers=_NO_STORE,
    )


def _metrics_allowed(request: Request, settings: Settings) -> None:
    """In oauth mode /metrics is for the scraper only: its token, or a setting that opens it."""
    if settings.auth == "open" or settings.public_metrics:
        return
    token = settings.metrics_token
    if token is None:
        raise FhirError.not_found("Not found")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise FhirError.unauthorized(
            "/metrics needs the metrics token", 'Bearer realm="telemon-metrics"'
        )


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    """The metrics in the Prometheus text format (for the scraper; not for the public)."""
    state = get_state(request)
    _metrics_allowed(request, state.settings)
    await run_in_threadpool(refresh_backlog, state.fhir.db)
    # In multiprocess mode this reads every worker's files: off the event loop.
    body, content_type = await run_in_threadpool(metrics.exposition)
    return Response(body, media_type=content_type, headers=_NO_STORE)


def refresh_backlog(db: Database) -> None:
    """Set the delivery-backlog gauge from the outbox (shared by every process and worker)."""
    try:
        with db.read() as conn:
            metrics.DELIVERY_BACKLOG.set(subscription_store.backlog(conn))
    except Exception as exc:  # the other metrics still answer; /ready reports the database
        log.warning("metrics: cannot read the delivery backlog: %s", type(exc).__name__)


def readiness_checks(db: Database) -> dict[str, str]:
    """``database`` and ``migrations``: each ``"ok"`` or a short description of the problem."""
    try:
        db.ping()
    except Exception as exc:  # any failure means "not ready"; the details go to the log only
        log.warning("readiness: database unreachable: %s", exc)
        # The exception text can name hosts and users; the probe answers without credentials.
        kind = exc.kind if isinstance(exc, StorageError) else type(exc).__name__
        return {"database": f"unreachable ({kind})", "migrations": "unknown"}
    try:
        if migrate.is_current(db):
            return {"database": "ok", "migrations": "ok"}
        current, head = migrate.current_revision(db), migrate.head_revision(db)
    except Exception as exc:
        log.warning("readiness: migration check failed: %s", exc)
        return {"database": "ok", "migrations": f"check failed ({type(exc).__name__})"}
    return {
        "database": "ok",
        "migrations": f"schema at {current or '(empty)'}, needs {head}; run `telemon db upgrade`",
    }
