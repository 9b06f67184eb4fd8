"""The FHIR REST endpoints under ``/fhir``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool

from service.api.conformance import CONFORMANCE_TYPES, capability_statement
from service.api.deps import (
    AppState,
    RequestContext,
    base_url_dependency,
    get_state,
    request_context,
    state_dependency,
)
from service.api.group_commit import Create
from service.api.interactions import allow, new_bundle, search_entry
from service.api.smart_configuration import smart_configuration_document
from service.api.wire import (
    FhirResponse,
    instant,
    negotiate,
    parse_form,
    prefer,
    read_json_body,
    resource_response,
)
from service.auth import policy
from service.auth.policy import Interaction
from service.core.dates import DateFormatError, parse_range
from service.core.outcome import FhirError, Issue, operation_outcome
from service.fhir import bundles
from service.fhir.patch import PATCH_MEDIA_TYPES, Patch, patch_of
from service.fhir.reads import SearchResult, VersionResult
from service.storage.repository import StoredVersion
from service.validation.integers import parse_unsigned
from service.validation.json_input import parse_patch_json

router = APIRouter(prefix="/fhir")
T = TypeVar("T")

State = Annotated[AppState, Depends(state_dependency)]
Base = Annotated[str, Depends(base_url_dependency)]
Ctx = Annotated[RequestContext, Depends(request_context, scope="function")]



def _query_params(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query_params.multi_items() if k not in ("_format",)]


async def _body(request: Request, state: AppState) -> Any:
    s = state.settings
    return await read_json_body(request, max_bytes=s.max_body_bytes, max_depth=s.max_json_depth)



def _searchset(base: str, res_type: str, result: SearchResult) -> FhirResponse:
    """The searchset Bundle; its links carry the parameters applied (not those ignored)."""
    applied = result.query.applied
    self_url = f"{base}/{res_type}" + (f"?{urlencode(applied)}" if applied else "")
    links = [{"relation": "self", "url": self_url}]
    if result.next_cursor:
        params = [(k, v) for k, v in applied if k != "_cursor"]
        query = urlencode([*params, ("_cursor", result.next_cursor)])
        links.append({"relation": "next", "url": f"{base}/{res_type}?{query}"})
    entries = [search_entry(base, r, "match") for r in result.matches]
    entries += [search_entry(base, r, "include") for r in result.included]
    if result.warnings:
        entries.append(
            {"resource": operation_outcome(result.warnings), "search": {"mode": "outcome"}}
        )
    extra: dict[str, Any] = {"link": links}
    if result.total is not None:
        extra["total"] = result.total
    return FhirResponse(new_bundle("searchset", entries, **extra))


def _strict(request: Request) -> bool:
    return prefer(request, "handling") == "strict"


@router.get("/metadata", dependencies=[Depends(negotiate)])
async def metadata(request: Request, state: State, base: Base) -> FhirResponse:
    """The CapabilityStatement (its ``rest.security`` from the SMART discovery document)."""
    smart = smart_configuration_document(request) if state.auth is not None else None
    statement = capability_statement(
        state.fhir.registry, state.fhir.profiles.profile_urls(), base, state.started_at, smart
    )
    return FhirResponse(statement)


@router.post("")
@router.post("/", include_in_schema=False)
async def transaction(
    request: Request,
    ctx: Ctx,
) -> FhirResponse:
    """Process a transaction or batch Bundle (every entry authorised on its own)."""
    state, who, audit = ctx.state, ctx.principal, ctx.audit
    audit.begin("transaction", None)
    data = await _body(request, state)
    if isinstance(data, dict) and data.get("type") == "batch":
        audit.begin("batch", None)
    representation = prefer(request, "return") == "representation"
    access = bundles.Access(
        permit=lambda res_type, interaction: policy.require(who, res_type, interaction),
        patient_ids=policy.compartment(who),
        in_transaction=audit.in_transaction,  # writes commit with their AuditEvent
    )
    try:
        result = await run_in_threadpool(
            bundles.process, state.fhir, data, representation=representation, access=access
        )
    finally:
        for _, touched in access.touched:
            audit.result(touched)
    return FhirResponse(result)


@router.get("/Observation/$lastn")
async def lastn(
    request: Request,
    ctx: Ctx,
) -> FhirResponse:
    """The newest ``max`` Observations per patient and code."""
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    patient_ids = allow(state, who, audit, "Observation", "search", query=request.url.query)
    audit.begin("operation", "Observation", request.url.query)
    rows, warnings = await run_in_threadpool(
        state.fhir.lastn,
        _query_params(request),
        strict=_strict(request),
        patient_ids=patient_ids,
        permit=partial(policy.require, who, interaction="search"),
        within=audit.in_read_transaction,
    )
    audit.rows(rows)
    entries = [search_entry(base, r, "match") for r in rows]
    if warnings:
        entries.append({"resource": operation_outcome(warnings), "search": {"mode": "outcome"}})
    return FhirResponse(new_bundle("searchset", entries, total=len(rows)))


def _conformance_search(state: State, base: str, res_type: str, request: Request) -> FhirResponse:
    wanted_url = request.query_params.get("url")
    resources = [
        r for r in state.conformance.all_of(res_type) if wanted_url in (None, r.get("url"))
    ]
    entries = [
        {"fullUrl": f"{base}/{res_type}/{r['id']}", "resource": r, "search": {"mode": "match"}}
        for r in resources
    ]
    return FhirResponse(new_bundle("searchset", entries, total=len(entries)))


@router.get("/{res_type}")
async def search(
    res_type: str,
    request: Request,
    ctx: Ctx,
) -> FhirResponse:
    """Type-level search (confined to the token's patient compartment)."""
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    if res_type in CONFORMANCE_TYPES:
        return _conformance_search(state, base, res_type, request)
    patient_ids = allow(state, who, audit, res_type, "search", query=request.url.query)
    result = await run_in_threadpool(
        partial(
            state.fhir.search,
            res_type,
            _query_params(request),
            strict=_strict(request),
            patient_ids=patient_ids,
            permit=partial(policy.require, who, interaction="search"),
            within=audit.in_read_transaction,
        )
    )
    audit.rows(result.matches + result.included)
    return _searchset(base, res_type, result)


@router.post("/{res_type}/_search")
async def search_post(
    res_type: str,
    request: Request,
    ctx: Ctx,
) -> FhirResponse:
    """Search with parameters in an ``application/x-www-form-urlencoded`` body."""
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    patient_ids = allow(state, who, audit, res_type, "search")
    params = _query_params(request) + await _form_params(request, state)
    if audit.record is not None:
        audit.record.query = urlencode(params)
    result = await run_in_threadpool(
        partial(
            state.fhir.search,
            res_type,
            params,
            strict=_strict(request),
            patient_ids=patient_ids,
            permit=partial(policy.require, who, interaction="search"),
            within=audit.in_read_transaction,
        )
    )
    audit.rows(result.matches + result.included)
    return _searchset(base, res_type, result)


async def _form_params(request: Request, state: AppState) -> list[tuple[str, str]]:
    """The parameters of an ``application/x-www-form-urlencoded`` body (415 for other types)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ("", "application/x-www-form-urlencoded"):
        raise FhirError.unsupported_media_type(
            "POST _search needs an application/x-www-form-urlencoded body",
            "Content-Type",
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > state.settings.max_body_bytes:
            raise FhirError.too_large("The search parameters are too long")
    return [(k, v) for k, v in parse_form(body) if k != "_format"]


#: The create route reads this header itself: a declared Header() parameter costs FastAPI's
#: parameter machinery on every create, the hottest request there is.
_IF_NONE_EXIST_DOC = {
    "name": "If-None-Exist",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "Conditional create: search criteria (a query string without the type)",
}


@router.post("/{res_type}", openapi_extra={"parameters": [_IF_NONE_EXIST_DOC]})
async def create(res_type: str, request: Request, ctx: Ctx) -> FhirResponse:
    """Create, or conditionally create with ``If-None-Exist``."""
    if_none_exist = request.headers.get("if-none-exist")
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    patient_ids = allow(state, who, audit, res_type, "create", write=True)
    data = await _body(request, state)
    if if_none_exist is None and res_type not in state.fhir.content_hooks:
        # Group commit; types with a content hook (Subscription: a DNS check) keep their own.
        # The AuditEvent is stored with the create, in its transaction.
        rtype = state.fhir.prepare(data, res_type)
        item = state.fhir.new_version(rtype, data, patient_ids)
        result = await state.creates.submit(Create(item, audit.companions(item)))
        audit.stored()
    else:
        result = await run_in_threadpool(
            partial(
                state.fhir.create,
                data,
                if_none_exist=if_none_exist,
                patient_ids=patient_ids,
                expected_type=res_type,
                in_transaction=audit.in_transaction,
            )
        )
    return resource_response(result, base, return_pref=prefer(request, "return"), location=True)


@router.get("/{res_type}/_history")
async def type_history(
    res_type: str,
    request: Request,
    ctx: Ctx,
) -> FhirResponse:
    """Every version of every resource of a type, newest first."""
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    patient_ids = allow(state, who, audit, res_type, "history-type", query=request.url.query)
    since, count = _history_params(request)
    versions = await run_in_threadpool(
        partial(
            state.fhir.history,
            res_type,
            None,
            since=since,
            count=count,
            patient_ids=patient_ids,
            within=audit.in_read_transaction,
        )
    )
    audit.rows(versions)
    return FhirResponse(_history_bundle(base, versions))


@router.get("/{res_type}/{res_id}")
async def read(
    res_type: str,
    res_id: str,
    ctx: Ctx,
) -> FhirResponse:
    """Read the current version (outside the token's compartment: the not-found 404)."""
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    if res_type in CONFORMANCE_TYPES:
        found = state.conformance.get(res_type, res_id)
        if found is None:
            raise FhirError.not_found(f"{res_type}/{res_id} is not known")
        return FhirResponse(found)
    patient_ids = allow(state, who, audit, res_type, "read")
    result = await run_in_threadpool(
        partial(
            state.fhir.read,
            res_type,
            res_id,
            patient_ids=patient_ids,
            within=audit.in_read_transaction,
        )
    )
    audit.result(result)
    return resource_response(result, base)


@router.put("/{res_type}/{res_id}")
async def update(
    res_type: str,
    res_id: str,
    request: Request,
    ctx: Ctx,
    if_match: Annotated[str | None, Header()] = None,
) -> FhirResponse:
    """Update (or create with this id); ``If-Match`` guards against lost updates."""
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    patient_ids = allow(state, who, audit, res_type, "update", write=True)
    data = await _body(request, state)
    result = await run_in_threadpool(
        partial(
            state.fhir.update,
            res_type,
            res_id,
            data,
            if_match=if_match,
            patient_ids=patient_ids,
            in_transaction=audit.in_transaction,
        )
    )
    return resource_response(
        result, base, return_pref=prefer(request, "return"), location=result.created
    )


@router.delete("/{res_type}/{res_id}")
async def delete(
    res_type: str,
    res_id: str,
    ctx: Ctx,
) -> FhirResponse:
    """Delete; later reads answer 410 Gone."""
    state, who, audit = ctx.state, ctx.principal, ctx.audit
    patient_ids = allow(state, who, audit, res_type, "delete", write=True)
    result = await run_in_threadpool(
        partial(
            state.fhir.delete,
            res_type,
            res_id,
            patient_ids=patient_ids,
            in_transaction=audit.in_transaction,
        )
    )
    return _deleted(result)


@router.patch("/{res_type}/{res_id}")
async def patch(
    res_type: str,
    res_id: str,
    request: Request,
    ctx: Ctx,
    if_match: Annotated[str | None, Header()] = None,
) -> FhirResponse:
    """Patch: JSON Patch, FHIRPath Patch (Parameters) or merge patch; ``If-Match`` honoured."""
    patient_ids = allow(ctx.state, ctx.principal, ctx.audit, res_type, "patch", write=True)
    body = await _patch_body(request, ctx.state)
    result = await _write(
        ctx, patient_ids, ctx.state.fhir.patch, res_type, res_id, body, if_match=if_match
    )
    return resource_response(result, ctx.base, return_pref=prefer(request, "return"))


async def _write(
    ctx: RequestContext,
    patient_ids: tuple[str, ...] | None,
    method: Callable[..., T],
    *args: Any,
    **kwargs: Any,
) -> T:
    """Run a FHIR service write in a worker thread, confined and audited in its transaction."""
    call = partial(
        method, *args, patient_ids=patient_ids, in_transaction=ctx.audit.in_transaction, **kwargs
    )
    return await run_in_threadpool(call)


async def _patch_body(request: Request, state: AppState) -> Patch:
    s = state.settings
    data = await read_json_body(
        request,
        max_bytes=s.max_body_bytes,
        max_depth=s.max_json_depth,
        media_types=PATCH_MEDIA_TYPES,
        parser=parse_patch_json,
    )
    return patch_of(request.headers.get("content-type", "").split(";")[0].strip().lower(), data)


def _conditional(
    ctx: RequestContext, request: Request, res_type: str, interaction: Interaction
) -> tuple[str, tuple[str, ...] | None]:
    """The criteria of a conditional write, authorised (the interaction and search)."""
    criteria = urlencode(_query_params(request))
    patient_ids = allow(
        ctx.state, ctx.principal, ctx.audit, res_type, interaction, query=criteria, write=True
    )
    policy.require(ctx.principal, res_type, "search")
    return criteria, patient_ids


@router.put("/{res_type}")
async def conditional_update(
    res_type: str,
    request: Request,
    ctx: Ctx,
    if_match: Annotated[str | None, Header()] = None,
) -> FhirResponse:
    """Conditional update ``PUT [type]?criteria``: create (no match), update (one), 412."""
    criteria, patient_ids = _conditional(ctx, request, res_type, "update")
    data = await _body(request, ctx.state)
    may_create = policy.allows(ctx.principal, res_type, "create")
    result = await _write(
        ctx, patient_ids, ctx.state.fhir.conditional_update, res_type, criteria, data,
        if_match=if_match, may_create=may_create,
    )
    return resource_response(
        result, ctx.base, return_pref=prefer(request, "return"), location=result.created
    )


@router.patch("/{res_type}")
async def conditional_patch(
    res_type: str,
    request: Request,
    ctx: Ctx,
    if_match: Annotated[str | None, Header()] = None,
) -> FhirResponse:
    """Conditional patch ``PATCH [type]?criteria`` of the one match (none: 404; several: 412)."""
    criteria, patient_ids = _conditional(ctx, request, res_type, "patch")
    body = await _patch_body(request, ctx.state)
    result = await _write(
        ctx, patient_ids, ctx.state.fhir.conditional_patch, res_type, criteria, body,
        if_match=if_match,
    )
    return resource_response(result, ctx.base, return_pref=prefer(request, "return"))


@router.delete("/{res_type}")
async def conditional_delete(res_type: str, request: Request, ctx: Ctx) -> FhirResponse:
    """Conditional delete ``DELETE [type]?criteria`` of the one match (several: 412)."""
    criteria, patient_ids = _conditional(ctx, request, res_type, "delete")
    result = await _write(
        ctx, patient_ids, ctx.state.fhir.conditional_delete, res_type, criteria
    )
    if result is None:
        issue = Issue("not-found", f"No {res_type} matches '{criteria}'", (), "information")
        return FhirResponse(operation_outcome([issue]), status_code=200)
    return _deleted(result)


def _deleted(result: VersionResult) -> FhirResponse:
    return FhirResponse(
        operation_outcome(result.issues),
        status_code=200,
        headers={"ETag": f'W/"{result.version_id}"'},
    )


@router.get("/{res_type}/{res_id}/_history")
async def instance_history(
    res_type: str,
    res_id: str,
    request: Request,
    ctx: Ctx,
) -> FhirResponse:
    """Every version of one resource, newest first."""
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    patient_ids = allow(state, who, audit, res_type, "history-instance")
    since, count = _history_params(request)
    versions = await run_in_threadpool(
        partial(
            state.fhir.history,
            res_type,
            res_id,
            since=since,
            count=count,
            patient_ids=patient_ids,
            within=audit.in_read_transaction,
        )
    )
    audit.rows(versions)
    return FhirResponse(_history_bundle(base, versions))


@router.get("/{res_type}/{res_id}/_history/{version}")
async def vread(
    res_type: str,
    res_id: str,
    version: str,
    ctx: Ctx,
) -> FhirResponse:
    """Read one version."""
    state, base, who, audit = ctx.state, ctx.base, ctx.principal, ctx.audit
    patient_ids = allow(state, who, audit, res_type, "vread")
    result = await run_in_threadpool(
        partial(
            state.fhir.vread,
            res_type,
            res_id,
            version,
            patient_ids=patient_ids,
            within=audit.in_read_transaction,
        )
    )
    audit.result(result)
    return resource_response(result, base)


def _history_params(request: Request) -> tuple[int | None, int | None]:
    since_raw = request.query_params.get("_since")
    count_raw = request.query_params.get("_count")
    since = None
    if since_raw:
        try:
            since = parse_range(since_raw, state_zone(request))[0]
        except DateFormatError as exc:
            raise FhirError.invalid(str(exc), "_since") from exc
    count = parse_unsigned(count_raw, maximum=get_state(request).settings.max_page_size, clamp=True)
    if count_raw is not None and count is None:
        raise FhirError.invalid("_count must be a non-negative integer", "_count")
    return since, count


def state_zone(request: Request) -> Any:
    """The server's time zone."""
    return get_state(request).fhir.zone


def _history_bundle(base: str, versions: list[StoredVersion]) -> dict[str, Any]:
    entries = []
    for v in versions:
        url = f"{v.res_type}/{v.res_id}"
        entry: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
        if v.deleted:
            entry["request"] = {"method": "DELETE", "url": url}
            entry["response"] = {"status": "410 Gone", "lastModified": instant(v.last_updated)}
        else:
            entry["resource"] = orjson.Fragment(v.content or "{}")
            method = "POST" if v.version_id == 1 else "PUT"
            entry["request"] = {"method": method, "url": url if method == "PUT" else v.res_type}
            entry["response"] = {
                "status": "201 Created" if v.version_id == 1 else "200 OK",
                "etag": f'W/"{v.version_id}"',
                "lastModified": instant(v.last_updated),
            }
        entries.append(entry)
    return new_bundle("history", entries, total=len(entries))
