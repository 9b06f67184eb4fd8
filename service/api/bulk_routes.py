"""HTTP for bulk access: ``Patient/{id}/$everything``, the programme ``Group``s and Bulk Data
``$export`` (kick-off, status, cancel, file download), per the Bulk Data Access IG v2.

Included before the generic FHIR routes: ``/fhir/$export`` and ``/fhir/Patient/$export`` would
otherwise be taken for a search and a read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import format_datetime
from functools import partial
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from service.api.deps import RequestContext, request_context
from service.api.interactions import allow, new_bundle, search_entry
from service.api.wire import FhirResponse, prefer
from service.audit.events import Touched
from service.auth.policy import Principal, forbidden
from service.bulk import groups
from service.bulk.everything import everything
from service.bulk.jobs import RETRY_AFTER_SECONDS, BulkExports, Manifest
from service.bulk.request import Level, may_export, parse_kickoff
from service.core.dates import format_instant, from_micros
from service.core.outcome import FhirError, Issue, operation_outcome

router = APIRouter(prefix="/fhir")

Ctx = Annotated[RequestContext, Depends(request_context, scope="function")]
NDJSON = "application/fhir+ndjson"
_NDJSON_ACCEPT = {NDJSON, "application/ndjson", "ndjson", "*/*", "application/*"}


def _exports(request: Request) -> BulkExports:
    exports: BulkExports = request.app.state.exports
    return exports


# -- $everything ---------------------------------------------------------------------------------


@router.get("/Patient/{patient_id}/$everything")
async def patient_everything(patient_id: str, request: Request, ctx: Ctx) -> FhirResponse:
    """The patient's record: the Patient and its compartment, paged (``_since``, ``_type``,
    ``start``, ``end``, ``_count``); another patient's, for a patient token, is a 404."""
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    patient_ids = allow(state, who, audit, "Patient", "read", query=request.url.query)
    audit.begin("operation", "Patient", request.url.query)
    params = dict(request.query_params)

    def may_search(res_type: str) -> bool:
        return who.kind == "open" or who.grants.allows(who.context, res_type, "s")

    page = await run_in_threadpool(
        partial(
            everything,
            state.fhir,
            patient_id,
            params,
            may_search=may_search,
            patient_ids=patient_ids,
            within=audit.in_read_transaction,
        )
    )
    audit.rows(page.rows)
    here = f"{base}/Patient/{patient_id}/$everything"
    links = [
        {"relation": "self", "url": here + (f"?{request.url.query}" if request.url.query else "")}
    ]
    if page.next_cursor:
        kept = [(k, v) for k, v in request.query_params.multi_items() if k != "_cursor"]
        links.append(
            {
                "relation": "next",
                "url": f"{here}?{urlencode([*kept, ('_cursor', page.next_cursor)])}",
            }
        )
    entries = [search_entry(base, row, "match") for row in page.rows]
    return FhirResponse(new_bundle("searchset", entries, link=links))


# -- Group (programme cohorts) -----------------------------------------------------------------


def _group_access(state: Any, who: Principal, interaction: str) -> None:
    """Cohort membership lists patients: backend services (and open mode) only."""
    if who.kind == "patient":
        raise forbidden("Group is for backend services (system tokens) only")
    if who.kind == "system" and not who.grants.allows("system", "Group", interaction):
        raise forbidden(
            f"The token's scopes do not allow this on Group (needs system/Group.{interaction})"
        )


@router.get("/Group/{group_id}")
async def read_group(group_id: str, ctx: Ctx) -> FhirResponse:
    """A programme cohort, its members as of now."""
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    audit.begin("read", "Group")
    _group_access(state, who, "r")
    programme = groups.PROGRAMMES.get(group_id)
    if programme is None:
        raise FhirError.not_found(f"Group/{group_id} is not known")
    group = await run_in_threadpool(_group, state.fhir, programme, base)
    _audit_members(audit, group)
    return FhirResponse(group)


@router.get("/Group")
async def search_group(request: Request, ctx: Ctx) -> FhirResponse:
    """Find the cohorts (``_id``, ``identifier``, ``name``)."""
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    audit.begin("search-type", "Group", request.url.query)
    _group_access(state, who, "s")
    params = list(request.query_params.multi_items())
    found = groups.matching(params)
    if found is None:
        names = ", ".join(sorted({k for k, _ in params}))
        raise FhirError.unsupported(f"Group supports _id, identifier and name (got {names})")
    entries = []
    for programme in found:
        group = await run_in_threadpool(_group, state.fhir, programme, base)
        _audit_members(audit, group)
        entries.append(
            {
                "fullUrl": f"{base}/Group/{programme.group_id}",
                "resource": group,
                "search": {"mode": "match"},
            }
        )
    self_url = f"{base}/Group" + (f"?{request.url.query}" if request.url.query else "")
    return FhirResponse(
        new_bundle(
            "searchset", entries, total=len(entries), link=[{"relation": "self", "url": self_url}]
        )
    )


@router.api_route("/Group", methods=["POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
@router.api_route("/Group/{group_id}", methods=["PUT", "DELETE", "PATCH"], include_in_schema=False)
async def write_group() -> None:
    """The cohorts follow the CarePlans: they cannot be written (405)."""
    raise FhirError.method_not_allowed(
        "Group is read-only: a cohort is the patients enrolled by an active CarePlan",
    )


def _group(fhir: Any, programme: groups.Programme, base: str) -> dict[str, Any]:
    with fhir.db.read() as conn:
        return groups.group_resource(fhir, conn, programme, base)


def _audit_members(audit: Any, group: dict[str, Any]) -> None:
    audit.touched.append(Touched("Group", group["id"], None, None))
    if audit.record is not None:
        audit.record.patient_ids.extend(
            m["entity"]["reference"].removeprefix("Patient/") for m in group["member"]
        )


# -- $export kick-off ---------------------------------------------------------------------------


async def _kickoff(
    request: Request, ctx: RequestContext, level: Level, group: str | None
) -> Response:
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    audit.begin(
        "operation",
        {"system": None, "patient": "Patient", "group": "Group"}[level],
        request.url.query,
    )
    if group is not None:
        audit.touched.append(Touched("Group", group, None, None))
    lenient = prefer(request, "handling") == "lenient"
    params = parse_kickoff(
        request.url.query,
        level=level,
        group=group,
        principal=who,
        registry=state.fhir.registry,
        zone=state.fhir.zone,
        lenient=lenient,
    )
    path = request.url.path.removeprefix("/fhir")
    request_url = f"{base}{path}" + (f"?{request.url.query}" if request.url.query else "")
    job_id = await run_in_threadpool(
        partial(
            _exports(request).kickoff,
            params,
            client_id=who.client_id,
            request_url=request_url,
            lenient=lenient,
        )
    )
    if audit.record is not None:
        audit.record.description = f"Bulk Data export {job_id} queued: {', '.join(params.types)}"
    accepted = Issue(
        "informational", f"Export {job_id} queued ({', '.join(params.types)})", (), "information"
    )
    return FhirResponse(
        operation_outcome([accepted]),
        status_code=202,
        headers={"Content-Location": f"{base}/$export-status/{job_id}"},
    )


@router.get("/$export")
async def export_system(request: Request, ctx: Ctx) -> Response:
    """System-level export: every resource the client may read."""
    return await _kickoff(request, ctx, "system", None)


@router.get("/Patient/$export")
async def export_patients(request: Request, ctx: Ctx) -> Response:
    """Patient-level export: the compartments of all patients."""
    return await _kickoff(request, ctx, "patient", None)


@router.get("/Group/{group_id}/$export")
async def export_group(group_id: str, request: Request, ctx: Ctx) -> Response:
    """Group-level export: the compartments of a programme's enrolled patients."""
    return await _kickoff(request, ctx, "group", group_id)


# -- status, cancel, files -----------------------------------------------------------------------


@router.get("/$export-status/{job_id}")
async def export_status(job_id: str, request: Request, ctx: Ctx) -> Response:
    """202 with ``X-Progress`` while running, 200 with the manifest when complete, 500 with an
    OperationOutcome when it failed."""
    base, who = ctx.base, ctx.principal
    row = await run_in_threadpool(_exports(request).job, job_id, who.client_id)
    if row.status in ("queued", "running"):
        return Response(
            status_code=202,
            headers={
                "X-Progress": (row.progress or row.status)[:99],
                "Retry-After": str(RETRY_AFTER_SECONDS),
            },
        )
    if row.status == "failed":
        raise FhirError.server_error(row.error or "The export failed")
    manifest = Manifest.from_json(row.manifest or '{"output": [], "deleted": [], "error": []}')
    files = f"{base}/$export-files/{job_id}"

    def items(kind: str) -> list[dict[str, Any]]:
        return [
            {"type": f.res_type, "url": f"{files}/{f.name}", "count": f.count}
            for f in getattr(manifest, kind)
        ]

    body: dict[str, Any] = {
        "transactionTime": format_instant(row.transaction_time or row.created_at),
        "request": row.request_url,
        "requiresAccessToken": ctx.state.auth is not None,
        "output": items("output"),
        "error": items("error"),
    }
    if manifest.deleted:
        body["deleted"] = items("deleted")
    expires = format_datetime(from_micros(row.expires_at or row.created_at), usegmt=True)
    return JSONResponse(body, headers={"Expires": expires})


@router.delete("/$export-status/{job_id}")
async def export_cancel(job_id: str, request: Request, ctx: Ctx) -> Response:
    """Cancel an export (or, finished, delete its files); the status URL then answers 404."""
    ctx.audit.begin("delete", None, f"$export-status/{job_id}")
    await run_in_threadpool(_exports(request).cancel, job_id, ctx.principal.client_id)
    if ctx.audit.record is not None:
        ctx.audit.record.description = f"Bulk Data export {job_id} cancelled"
    done = Issue("informational", f"Export {job_id} cancelled", (), "information")
    return FhirResponse(operation_outcome([done]), status_code=202)


async def download_context(request: Request) -> AsyncIterator[RequestContext]:
    """:func:`~service.api.deps.request_context` for NDJSON downloads: ``Accept`` is checked
    here (NDJSON or anything), so the FHIR-JSON negotiation sees none."""
    accept = request.headers.get("accept")
    if accept and not any(
        part.split(";")[0].strip().lower() in _NDJSON_ACCEPT for part in accept.split(",")
    ):
        raise FhirError.not_acceptable(f"Export files are {NDJSON}", "Accept")
    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"accept"]
    async with asynccontextmanager(request_context)(Request(scope, request.receive)) as ctx:
        yield ctx


@router.get("/$export-files/{job_id}/{file_name}")
async def export_file(
    job_id: str,
    file_name: str,
    request: Request,
    ctx: Annotated[RequestContext, Depends(download_context, scope="function")],
) -> Response:
    """One NDJSON file of a finished export (streamed), for the client that asked for it and a
    token that may still read its type."""
    who, audit = ctx.principal, ctx.audit
    audit.begin("operation", None, f"$export-files/{job_id}/{file_name}")
    path, item = await run_in_threadpool(_exports(request).file, job_id, who.client_id, file_name)
    if item.res_type not in ("Bundle", "OperationOutcome") and not may_export(who, item.res_type):
        raise forbidden(
            f"The token's scopes do not allow reading {item.res_type} (system/{item.res_type}.rs)"
        )
    if audit.record is not None:
        audit.record.res_type = item.res_type
        audit.record.description = (
            f"Bulk Data export {job_id}: {file_name} downloaded ({item.count} {item.res_type})"
        )
    return FileResponse(path, media_type=NDJSON, headers={"Cache-Control": "no-store"})
