"""HTTP endpoints of the authorization server (``/oauth/*``) and SMART discovery.

The PGO flow: ``GET /oauth/authorize`` validates the request and starts the patient login:
the simulated DigiD form (``POST /oauth/login``), or a redirect to the DigiD/TVS broker that
returns to ``GET /oauth/oidc/callback``. Either shows the consent page; ``POST /oauth/consent``
redirects back to the client with a code (or ``error=access_denied``); ``POST /oauth/token``
exchanges it. Backend services go straight to ``/oauth/token`` with ``client_credentials`` and a
signed assertion.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any
from urllib.parse import urlencode

import orjson
from authlib.oauth2 import OAuth2Error
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from joserfc import jws
from joserfc.errors import JoseError

from service.api.deps import (
    AuthState,
    base_url,
    client_address,
    get_state,
    is_https,
    issuer_url,
    token_url,
)
from service.api.pages import HTML_HEADERS, consent_page, error_page, html_headers, login_page
from service.api.patient_login import MAX_FORM_BYTES, audit_login, auth_state
from service.api.smart_configuration import smart_configuration_document
from service.api.wire import read_small_form
from service.audit.events import AccessRecord, Actor
from service.auth import consent
from service.auth import scopes as sc
from service.auth.consent import CSRF_COOKIE, LOGIN_COOKIE, ConsentError, Pending, PendingLogin
from service.auth.grants import PatientUser
from service.auth.identity import LoginError, SimulatedDigiD
from service.auth.rate_limits import Blocked
from service.auth.server import FormRequest
from service.auth.tokens import public_jwks
from service.core.outcome import FhirError
from service.storage.db import Connection

router = APIRouter(include_in_schema=False)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}



@router.get("/fhir/.well-known/smart-configuration")
async def smart_configuration(request: Request) -> JSONResponse:
    """SMART discovery: endpoints and capabilities."""
    auth_state(request)
    return JSONResponse(smart_configuration_document(request))


@router.get("/oauth/jwks")
async def jwks(request: Request) -> JSONResponse:
    """The public key that signs access tokens."""
    auth = auth_state(request)
    return JSONResponse(public_jwks(auth.tokens.key))


def _oauth_request(request: Request, method: str, params: list[tuple[str, str]]) -> FormRequest:
    medmij = get_state(request).settings.medmij_scopes
    expanded = [
        (k, " ".join(sc.expand_medmij(sc.split(v), medmij)) if k == "scope" else v)
        for k, v in params
    ]
    return FormRequest(
        method,
        expanded,
        request.headers,
        audience=base_url(request),
        token_url=token_url(request),
    )


def _html(content: str, status: int = 200, redirect_uri: str | None = None) -> HTMLResponse:
    """An HTML page; ``redirect_uri``: where its form may lead (see :func:`html_headers`)."""
    return HTMLResponse(content, status_code=status, headers=html_headers(redirect_uri))


def _authorize_error(error: OAuth2Error) -> Response:
    """Redirect the error to the client only when its redirect URI was validated."""
    if error.redirect_uri:
        status, _, headers = error()
        return Response(status_code=status, headers={**dict(headers), **HTML_HEADERS})
    return _html(error_page(f"{error.error}: {error.description or ''}"), 400)


def _with_csrf_cookie(
    response: Response, request: Request, csrf: str, name: str = CSRF_COOKIE
) -> Response:
    # SameSite=lax: the DigiD broker's redirect back (a top-level GET) must still carry it.
    response.set_cookie(
        name,
        csrf,
        max_age=consent.TX_SECONDS,
        path="/oauth",
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )
    return response


def _oidc_callback_url(request: Request) -> str:
    """Where the DigiD broker sends the browser back (register it at the broker)."""
    return issuer_url(request) + "/oauth/oidc/callback"



@router.get("/oauth/authorize")
async def authorize(request: Request) -> Response:
    """Validate the authorization request, then show the patient login."""
    auth = auth_state(request)
    oreq = _oauth_request(request, "GET", list(request.query_params.multi_items()))
    try:
        await run_in_threadpool(auth.server.get_consent_grant, oreq)
    except OAuth2Error as error:
        return _authorize_error(error)
    params = list(oreq.payload.data.items())
    identity = auth.identity
    if not isinstance(identity, SimulatedDigiD):  # DigiD through the OIDC broker
        try:
            started = await run_in_threadpool(identity.start, _oidc_callback_url(request))
        except LoginError as exc:
            return _html(error_page(str(exc)), 502)
        login_tx = PendingLogin(
            params, started.state, started.nonce, started.code_verifier, consent.new_tx_id()
        )
        sealed = consent.seal_login(auth.tokens.key, login_tx)
        response = Response(status_code=302, headers={**HTML_HEADERS, "Location": started.url})
        return _with_csrf_cookie(response, request, sealed, LOGIN_COOKIE)
    csrf = consent.new_csrf()
    tx = consent.start(auth.tokens.key, params, csrf)
    page = login_page(tx, csrf, identity.label)
    return _with_csrf_cookie(_html(page, redirect_uri=oreq.payload.redirect_uri), request, csrf)


async def _pending(request: Request, auth: AuthState) -> tuple[Pending, dict[str, str]]:
    form = await read_small_form(request, MAX_FORM_BYTES)
    if form is None:
        raise ConsentError("Expected a form post")
    fields = dict(form)
    pending = consent.open_pending(
        auth.tokens.key,
        fields.get("tx", ""),
        fields.get("csrf_token", ""),
        request.cookies.get(CSRF_COOKIE),
    )
    return pending, fields


@router.post("/oauth/login")
async def login(request: Request) -> Response:
    """Log the patient in (simulated DigiD), then show the consent page."""
    auth = auth_state(request)
    identity = auth.identity
    if not isinstance(identity, SimulatedDigiD):
        return _html(error_page("Log in through DigiD (TELEMON_IDENTITY_PROVIDER=oidc)"), 404)
    try:
        pending, fields = await _pending(request, auth)
    except ConsentError as exc:
        return _html(error_page(str(exc)), 400)
    oreq = _oauth_request(request, "GET", pending.params)
    try:
        grant = await run_in_threadpool(auth.server.get_consent_grant, oreq)
    except OAuth2Error as error:
        return _authorize_error(error)
    client_id = oreq.payload.client_id
    limiter = get_state(request).limiter
    limits = limiter.patient_login(client_address(request), fields.get("bsn", ""), client_id)
    blocked = await run_in_threadpool(limiter.check, limits)
    if blocked is not None:
        return await _login_refused(auth, request, client_id, blocked)
    try:
        user = await run_in_threadpool(identity.patient_for_bsn, fields.get("bsn", ""))
    except LoginError as exc:
        await audit_login(auth, request, client_id, f"login failed: {exc}", None, "4")
        blocked = await run_in_threadpool(limiter.failed, limits)
        if blocked is not None:
            return await _login_refused(auth, request, client_id, blocked)
        csrf = fields.get("csrf_token", "")
        page = login_page(fields.get("tx", ""), csrf, identity.label, str(exc))
        return _html(page, 400, oreq.payload.redirect_uri)
    await audit_login(auth, request, client_id, "patient login", user)
    logged_in = dataclasses.replace(pending, patient_id=user.patient_id, subject=user.subject)
    page = _consent_page(auth, grant, logged_in, fields.get("csrf_token", ""))
    return _html(page, redirect_uri=oreq.payload.redirect_uri)


async def _login_refused(
    auth: AuthState, request: Request, client_id: str | None, blocked: Blocked
) -> Response:
    """429: too many failed logins (audited; the BSN is not even looked at)."""
    what = f"login refused: {blocked.describe()}"
    await audit_login(auth, request, client_id, what, None, "4")
    message = (
        f"Te veel mislukte inlogpogingen; probeer het over {blocked.minutes} minuten opnieuw / "
        f"Too many failed login attempts; try again in {blocked.minutes} minutes"
    )
    response = _html(error_page(message), 429)
    response.headers.update(blocked.header)
    return response


def _consent_page(auth: AuthState, grant: Any, pending: Pending, csrf: str) -> str:
    """The consent page for a logged-in ``pending`` authorization."""
    settings = auth.server.settings
    return consent_page(
        consent.seal(auth.tokens.key, pending),
        csrf,
        grant.request.client.name,
        consent.describe(grant.request.scope),
        settings.pgo_token_seconds // 60,
        consent.today(settings.timezone).isoformat(),
    )


@router.get("/oauth/oidc/callback")
async def oidc_callback(request: Request) -> Response:
    """The DigiD broker's redirect back: verify the login, then show the consent page."""
    auth = auth_state(request)
    identity = auth.identity
    if isinstance(identity, SimulatedDigiD):
        return _html(error_page("Geen DigiD-broker ingesteld / No DigiD broker is configured"), 404)
    query = request.query_params
    try:
        login_tx = consent.open_login(
            auth.tokens.key, request.cookies.get(LOGIN_COOKIE), query.get("state", "")
        )
    except ConsentError as exc:
        return _html(error_page(str(exc)), 400)
    oreq = _oauth_request(request, "GET", login_tx.params)
    try:
        grant = await run_in_threadpool(auth.server.get_consent_grant, oreq)
    except OAuth2Error as error:
        return _authorize_error(error)
    client_id = oreq.payload.client_id
    if "error" in query or not query.get("code"):
        # The broker refused or the patient cancelled: the client hears access_denied.
        what = f"login failed at the DigiD broker: {query.get('error', 'no code')[:100]}"
        await audit_login(auth, request, client_id, what, None, "4")
        status, _, headers = await run_in_threadpool(
            auth.server.create_authorization_response, oreq, None, grant
        )
        response = Response(status_code=status, headers={**dict(headers), **HTML_HEADERS})
        response.delete_cookie(LOGIN_COOKIE, path="/oauth")
        return response
    try:
        user = await run_in_threadpool(
            identity.finish, query["code"], _oidc_callback_url(request), login_tx
        )
    except LoginError as exc:
        what = f"login failed: {exc} ({exc.__cause__ or 'no detail'})"[:500]
        await audit_login(auth, request, client_id, what, None, "4")
        response = _html(error_page(str(exc)), 400)
        response.delete_cookie(LOGIN_COOKIE, path="/oauth")
        return response
    await audit_login(auth, request, client_id, "patient login (DigiD)", user)
    csrf = consent.new_csrf()
    pending = dataclasses.replace(
        consent.bind(login_tx.params, csrf, login_tx.tx_id),
        patient_id=user.patient_id,
        subject=user.subject,
    )
    page = _html(_consent_page(auth, grant, pending, csrf), redirect_uri=oreq.payload.redirect_uri)
    response = _with_csrf_cookie(page, request, csrf)
    response.delete_cookie(LOGIN_COOKIE, path="/oauth")
    return response


def _claim_transaction(auth: AuthState, tx_id: str) -> bool:
    """Use up the authorization transaction (one decision, one code)."""
    with auth.server.db.write() as conn:
        return consent.claim(conn, tx_id)


@router.post("/oauth/consent")
async def consent_decision(request: Request) -> Response:
    """Record the patient's decision and redirect back to the client."""
    auth = auth_state(request)
    try:
        pending, fields = await _pending(request, auth)
    except ConsentError as exc:
        return _html(error_page(str(exc)), 400)
    decision = fields.get("decision")
    if pending.patient_id is None or pending.subject is None or decision not in ("allow", "deny"):
        return _html(error_page("Invalid consent form"), 400)
    try:
        term = consent.parse_term(
            fields.get("term", "once"), fields.get("until", ""), auth.server.settings.timezone
        )
    except ConsentError as exc:
        return _html(error_page(str(exc)), 400)
    user = PatientUser(pending.patient_id, pending.subject)
    oreq = _oauth_request(request, "GET", pending.params)
    oreq.consent_term = term
    try:
        grant = await run_in_threadpool(auth.server.get_consent_grant, oreq, user)
    except OAuth2Error as error:
        return _authorize_error(error)
    if not await run_in_threadpool(_claim_transaction, auth, pending.tx_id):
        await audit_login(
            auth,
            request,
            oreq.payload.client_id,
            "consent refused: the decision was already posted (replay)",
            user,
            "4",
            "consent",
        )
        return _html(error_page("Deze toestemming is al gegeven / Consent was already given"), 400)
    await audit_login(
        auth,
        request,
        oreq.payload.client_id,
        f"consent: {decision}"
        + (f" ({consent.describe_term(term)})" if decision == "allow" else ""),
        user,
        "0" if decision == "allow" else "4",  # BALP AuthZconsent: a deny is a failure
        "consent",
    )
    status, _, headers = await run_in_threadpool(
        auth.server.create_authorization_response,
        oreq,
        user if decision == "allow" else None,
        grant,
    )
    response = Response(status_code=status, headers={**dict(headers), **HTML_HEADERS})
    response.delete_cookie(CSRF_COOKIE, path="/oauth")
    return response


@router.post("/oauth/token")
async def token(request: Request) -> JSONResponse:
    """The token endpoint (RFC 6749 section 3.2; errors as RFC 6749 section 5.2 JSON).

    Every request is audited, refused and failed ones too: a backend service's in the
    transaction that issues its token, the others before the answer is sent.
    """
    auth = auth_state(request)
    try:
        params = await read_small_form(request, MAX_FORM_BYTES)
    except FhirError as exc:  # not UTF-8, or a NUL character: RFC 6749's error instead
        body = {"error": "invalid_request", "error_description": str(exc)}
        unread = _oauth_request(request, "POST", [])
        await auth.audit.write(*_token_audit(request, unread, 400, body))
        return JSONResponse(body, status_code=400, headers=_NO_STORE)
    if params is None:
        body = {
            "error": "invalid_request",
            "error_description": "Send an application/x-www-form-urlencoded body",
        }
        oreq = _oauth_request(request, "POST", [])
        await auth.audit.write(*_token_audit(request, oreq, 400, body))
        return JSONResponse(body, status_code=400, headers=_NO_STORE)
    oreq = _oauth_request(request, "POST", params)
    limiter = get_state(request).limiter
    limits = limiter.token(client_address(request), _claimed_client(oreq))
    blocked = await run_in_threadpool(limiter.check, limits)
    if blocked is not None:  # refused unchecked (and audited as such)
        return await _token_refused(auth, request, oreq, blocked)

    def audit_in(conn: Connection, status: int, payload: Any) -> None:
        auth.audit.trail.write_in(conn, *_token_audit(request, oreq, status, payload))

    try:
        status, payload, headers = await run_in_threadpool(
            auth.server.create_token_response, oreq, audit=audit_in
        )
    except Exception as exc:  # nothing was committed: audit the failure on its own
        body = {"error": "server_error", "error_description": type(exc).__name__}
        await auth.audit.write(*_token_audit(request, oreq, 500, body))
        raise
    if status != 200:
        blocked = await run_in_threadpool(limiter.failed, limits)
        if blocked is not None:
            return _slow_down(blocked)
    out = {k: v for k, v in headers if k.lower() != "content-type"}
    return JSONResponse(payload, status_code=status, headers={**out, **_NO_STORE})


@router.post("/oauth/revoke")
async def revoke(request: Request) -> JSONResponse:
    """Token revocation (RFC 7009) by the client that holds the token."""
    return await _token_endpoint(request, "revocation")


@router.post("/oauth/introspect")
async def introspect(request: Request) -> JSONResponse:
    """Token introspection (RFC 7662) for registered backend services."""
    return await _token_endpoint(request, "introspection")


async def _token_endpoint(request: Request, name: str) -> JSONResponse:
    """Revocation or introspection: client authentication rate-limited like the token
    endpoint, and audited (with the patient the token concerns)."""
    auth = auth_state(request)
    try:
        params = await read_small_form(request, MAX_FORM_BYTES)
    except FhirError:
        params = None
    if params is None:
        body = {
            "error": "invalid_request",
            "error_description": "Send an application/x-www-form-urlencoded UTF-8 body",
        }
        return JSONResponse(body, status_code=400, headers=_NO_STORE)
    oreq = _oauth_request(request, "POST", params)
    limiter = get_state(request).limiter
    limits = limiter.token(client_address(request), _claimed_client(oreq))
    blocked = await run_in_threadpool(limiter.check, limits)
    if blocked is not None:
        return _slow_down(blocked)
    status, payload, headers = await run_in_threadpool(
        auth.server.token_endpoint_response, name, oreq
    )
    if status != 200:
        await run_in_threadpool(limiter.failed, limits)
    actor, record = _token_audit(request, oreq, status, payload)
    record.description = f"{name}: {record.description or 'ok'}"
    if name == "introspection" and isinstance(payload, dict):
        record.description += f" (active: {str(payload.get('active', False)).lower()})"
    await auth.audit.write(actor, record)
    out = {k: v for k, v in headers if k.lower() != "content-type"}
    return JSONResponse(payload, status_code=status, headers={**out, **_NO_STORE})


def _slow_down(blocked: Blocked) -> JSONResponse:
    """429 for the token endpoint (``slow_down``: RFC 8628's error for polling too fast)."""
    body = {"error": "slow_down", "error_description": blocked.describe()}
    return JSONResponse(body, status_code=429, headers={**blocked.header, **_NO_STORE})


async def _token_refused(
    auth: AuthState, request: Request, oreq: FormRequest, blocked: Blocked
) -> JSONResponse:
    body = {"error": "slow_down", "error_description": blocked.describe()}
    await auth.audit.write(*_token_audit(request, oreq, 429, body))
    return _slow_down(blocked)


#: Token request parameters that may be logged (never code, verifier, secret or assertion).
_LOGGED_TOKEN_PARAMS = ("grant_type", "scope", "client_id", "redirect_uri", "token_type_hint")


def _claimed_client(oreq: FormRequest) -> str | None:
    """The client a token request is from: authenticated, or else as it claims to be (as
    recorded: at most 255 characters, a NUL written as ``\\0``, see ``nul_error``)."""
    claimed = _claim(oreq)
    return claimed[:255].replace("\x00", "\\0") if claimed else None


def _claim(oreq: FormRequest) -> str | None:
    client = getattr(oreq, "client", None)
    if client is not None:
        return str(client.client_id)
    data = oreq.payload.data
    basic = oreq.headers.get("authorization", "")
    if basic.lower().startswith("basic "):
        try:
            return base64.b64decode(basic[6:]).decode().partition(":")[0] or None
        except (ValueError, UnicodeDecodeError):
            return None
    if data.get("client_id"):
        return data["client_id"]
    try:  # the unverified subject of a client assertion: who it claims to be
        payload = jws.extract_compact(data.get("client_assertion", "").encode()).payload
        sub = orjson.loads(payload).get("sub")
    except (JoseError, ValueError, AttributeError):
        return None
    return sub if isinstance(sub, str) else None


def _token_audit(
    request: Request, oreq: FormRequest, status: int, body: Any
) -> tuple[Actor, AccessRecord]:
    """The AuditEvent of one token request (BALP "Get Access Token"; failures too)."""
    data = oreq.payload.data
    query = urlencode([(k, data[k]) for k in _LOGGED_TOKEN_PARAMS if k in data])
    patient = body.get("patient") if isinstance(body, dict) and status == 200 else None
    patient = patient or oreq.concerns  # a refused refresh still concerns its patient
    if status == 200:
        description = None
    else:
        error = body.get("error") if isinstance(body, dict) else None
        detail = body.get("error_description") if isinstance(body, dict) else None
        description = f"{status} {error}: {detail or ''}".strip()
    actor = Actor(
        client_id=_claimed_client(oreq),
        user=f"Patient/{patient}" if patient else None,
        token_id=None,
        address=request.client.host if request.client else None,
    )
    record = AccessRecord(
        "token",
        query=query,
        outcome="0" if status == 200 else ("4" if status < 500 else "8"),
        description=description,
        patient_ids=[patient] if patient else [],
        issued_token=oreq.issued_jti if status == 200 else None,
    )
    return actor, record
