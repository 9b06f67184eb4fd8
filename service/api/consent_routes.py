"""The patient's consent overview (``/oauth/consents``, SMART's ``management_endpoint``).

After a DigiD login (through the TVS/OIDC broker, returning to ``/oauth/consents/callback``;
or the simulated BSN form) the patient sees every app with access, since and
until when and its last exchange, and can withdraw each: its refresh tokens die and its access
tokens are refused on every worker within a second (the revocation set). Each withdrawal is
audited in its own transaction, visible in the patient's audit trail.
"""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.api.deps import AuthState, client_address, get_state, is_https, issuer_url
from service.api.pages import HTML_HEADERS, ConsentRow, consents_page, error_page, login_page
from service.api.patient_login import MAX_FORM_BYTES, audit_login, auth_state
from service.api.wire import read_small_form
from service.audit.events import AccessRecord, Actor
from service.auth import clients, consent, consent_records, patient_session
from service.auth.compare import secrets_equal
from service.auth.consent import ConsentError, PendingLogin
from service.auth.grants import ConsentTerm, PatientUser
from service.auth.identity import LoginError, SimulatedDigiD
from service.auth.patient_session import PatientSession
from service.core.outcome import FhirError
from service.storage import consent_store
from service.storage.consent_store import ConsentRecord
from service.storage.db import Connection

router = APIRouter(include_in_schema=False)

_WITHDRAWN = "De toestemming is ingetrokken / The consent has been withdrawn"
_CHANGED = "De toestemming is gewijzigd / The consent has been changed"


def _html(content: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(content, status_code=status, headers=HTML_HEADERS)


def _cookie(response: Response, request: Request, name: str, value: str) -> Response:
    response.set_cookie(
        name,
        value,
        max_age=patient_session.SESSION_SECONDS,
        path=patient_session.PATH,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )
    return response


def _session(request: Request, auth: AuthState) -> PatientSession | None:
    return patient_session.open_session(
        auth.tokens.key, request.cookies.get(patient_session.COOKIE)
    )


async def _form(request: Request) -> dict[str, str]:
    try:
        form = await read_small_form(request, MAX_FORM_BYTES)
    except FhirError:
        form = None
    if form is None:
        raise ConsentError("Expected a form post")
    return dict(form)


def _callback_url(request: Request) -> str:
    """Where the DigiD broker sends the browser back (register it at the broker)."""
    return issuer_url(request) + f"{patient_session.PATH}/callback"


async def _login(request: Request, auth: AuthState, error: str | None = None) -> Response:
    """The login: the simulated DigiD form, or off to the DigiD broker."""
    identity = auth.identity
    if not isinstance(identity, SimulatedDigiD):
        try:
            started = await run_in_threadpool(identity.start, _callback_url(request))
        except LoginError as exc:
            return _html(error_page(str(exc)), 502)
        pending = PendingLogin(
            [], started.state, started.nonce, started.code_verifier, consent.new_tx_id()
        )
        to_broker = RedirectResponse(started.url, status_code=302, headers=HTML_HEADERS)
        # SameSite=lax: the broker's redirect back (a cross-site top-level GET) must carry it.
        to_broker.set_cookie(
            patient_session.LOGIN_COOKIE,
            consent.seal_login(auth.tokens.key, pending),
            max_age=consent.TX_SECONDS,
            path=patient_session.PATH,
            httponly=True,
            samesite="lax",
            secure=is_https(request),
        )
        return to_broker
    csrf = consent.new_csrf()
    page = login_page("", csrf, identity.label, error, action=f"{patient_session.PATH}/login")
    response = _html(page, 400 if error else 200)
    return _cookie(response, request, patient_session.CSRF_COOKIE, csrf)


@router.get(patient_session.PATH)
async def consents(request: Request) -> Response:
    """The overview of the logged-in patient's consents, or the DigiD login."""
    auth = auth_state(request)
    session = _session(request, auth)
    if session is None:
        return await _login(request, auth)
    notice = (
        _WITHDRAWN
        if request.query_params.get("withdrawn")
        else _CHANGED
        if request.query_params.get("changed")
        else None
    )
    return await _overview(request, auth, PatientUser(session.patient_id, session.subject), notice)


async def _overview(
    request: Request, auth: AuthState, user: PatientUser, notice: str | None = None
) -> Response:
    """The overview page, with a fresh session cookie (and CSRF token)."""
    rows = await run_in_threadpool(_rows, auth, user.patient_id)
    csrf = consent.new_csrf()
    fresh = patient_session.seal(auth.tokens.key, user.patient_id, user.subject, csrf)
    response = _html(consents_page(rows, csrf, notice))
    return _cookie(response, request, patient_session.COOKIE, fresh)


@router.get(f"{patient_session.PATH}/callback")
async def consents_callback(request: Request) -> Response:
    """The DigiD broker's redirect back: verify the login, then show the overview."""
    auth = auth_state(request)
    identity = auth.identity
    if isinstance(identity, SimulatedDigiD):
        return _html(error_page("Geen DigiD-broker ingesteld / No DigiD broker is configured"), 404)
    query = request.query_params
    try:
        pending = consent.open_login(
            auth.tokens.key,
            request.cookies.get(patient_session.LOGIN_COOKIE),
            query.get("state", ""),
        )
        if "error" in query or not query.get("code"):
            raise LoginError(f"DigiD: {query.get('error', 'no code')[:100]}")
        user = await run_in_threadpool(
            identity.finish, query["code"], _callback_url(request), pending
        )
    except (ConsentError, LoginError) as exc:
        await audit_login(auth, request, None, f"login failed: {exc}"[:500], None, "4")
        failed = _html(error_page(str(exc)), 400)
        failed.delete_cookie(patient_session.LOGIN_COOKIE, path=patient_session.PATH)
        return failed
    await audit_login(auth, request, None, "patient login (consent overview, DigiD)", user)
    # A page, not a redirect: after the cross-site redirect chain the browser would not send
    # the new SameSite=Strict session cookie with the next request.
    response = await _overview(request, auth, user)
    response.delete_cookie(patient_session.LOGIN_COOKIE, path=patient_session.PATH)
    return response


def _rows(auth: AuthState, patient_id: str) -> list[ConsentRow]:
    zone = ZoneInfo(auth.server.settings.timezone)
    with auth.server.db.read() as conn:
        records = consent_store.live_for_patient(conn, patient_id, int(time.time()))
        names = {}
        for r in records:
            client = clients.get(conn, r.client_id, include_inactive=True)
            names[r.client_id] = client.name if client else r.client_id
    return [_row(r, names[r.client_id], zone) for r in records]


def _row(record: ConsentRecord, app: str, zone: ZoneInfo) -> ConsentRow:
    def local(ts: int) -> str:
        return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M")

    if not record.long_term:
        until = (f"{local(record.ends_at or 0)} (alleen nu)", "this once")
    elif record.ends_at is None:
        until = ("onbepaalde tijd", "indefinitely")
    else:
        last_day = datetime.fromtimestamp(record.ends_at - 1, zone).date().isoformat()
        until = (f"t/m {last_day}", f"up to and including {last_day}")
    return ConsentRow(
        record.consent_id,
        app,
        local(record.granted_at),
        until,
        local(record.last_exchange_at),
        record.long_term,
    )


@router.post(f"{patient_session.PATH}/login")
async def consents_login(request: Request) -> Response:
    """The simulated DigiD login of the overview (rate-limited and audited like the app's)."""
    auth = auth_state(request)
    identity = auth.identity
    try:
        fields = await _form(request)
    except ConsentError as exc:
        return _html(error_page(str(exc)), 400)
    if not isinstance(identity, SimulatedDigiD):
        return await _login(request, auth)
    if not secrets_equal(
        fields.get("csrf_token"), request.cookies.get(patient_session.CSRF_COOKIE)
    ):
        return _html(error_page("CSRF token mismatch"), 400)
    limiter = get_state(request).limiter
    limits = limiter.patient_login(client_address(request), fields.get("bsn", ""), None)
    blocked = await run_in_threadpool(limiter.check, limits)
    if blocked is not None:
        await audit_login(auth, request, None, f"login refused: {blocked.describe()}", None, "4")
        refused = _html(error_page(blocked.describe()), 429)
        refused.headers.update(blocked.header)
        return refused
    try:
        user = await run_in_threadpool(identity.patient_for_bsn, fields.get("bsn", ""))
    except LoginError as exc:
        await audit_login(auth, request, None, f"login failed: {exc}", None, "4")
        await run_in_threadpool(limiter.failed, limits)
        return await _login(request, auth, str(exc))
    await audit_login(auth, request, None, "patient login (consent overview)", user)
    csrf = consent.new_csrf()
    sealed = patient_session.seal(auth.tokens.key, user.patient_id, user.subject, csrf)
    response = RedirectResponse(patient_session.PATH, status_code=303, headers=HTML_HEADERS)
    response.delete_cookie(patient_session.CSRF_COOKIE, path=patient_session.PATH)
    return _cookie(response, request, patient_session.COOKIE, sealed)


async def _patient_form(
    request: Request, auth: AuthState
) -> tuple[PatientUser, dict[str, str]] | Response:
    """The logged-in patient and their form post (CSRF checked), or the response to send."""
    session = _session(request, auth)
    if session is None:
        return await _login(request, auth)
    try:
        fields = await _form(request)
        patient_session.check_csrf(session, fields.get("csrf_token", ""))
    except ConsentError as exc:
        return _html(error_page(str(exc)), 400)
    return PatientUser(session.patient_id, session.subject), fields


@router.post(f"{patient_session.PATH}/withdraw")
async def consents_withdraw(request: Request) -> Response:
    """Withdraw one consent of the logged-in patient (audited with the withdrawal)."""
    auth = auth_state(request)
    posted = await _patient_form(request, auth)
    if isinstance(posted, Response):
        return posted
    user, fields = posted
    found = await run_in_threadpool(
        _withdraw, auth, request, user, fields.get("consent_id", "")
    )
    if not found:
        return _html(error_page("Onbekende toestemming / Unknown consent"), 404)
    auth.tokens.revoked.sync()  # this worker at once; the others within a second
    return RedirectResponse(
        f"{patient_session.PATH}?withdrawn=1", status_code=303, headers=HTML_HEADERS
    )


@router.post(f"{patient_session.PATH}/logout")
async def consents_logout(request: Request) -> Response:
    """End the overview session."""
    auth = auth_state(request)
    session = _session(request, auth)
    try:
        fields = await _form(request)
        if session is not None:
            patient_session.check_csrf(session, fields.get("csrf_token", ""))
    except ConsentError as exc:
        return _html(error_page(str(exc)), 400)
    response = RedirectResponse(patient_session.PATH, status_code=303, headers=HTML_HEADERS)
    response.delete_cookie(patient_session.COOKIE, path=patient_session.PATH)
    return response


@router.post(f"{patient_session.PATH}/change")
async def consents_change(request: Request) -> Response:
    """Move the end of one long-term consent of the logged-in patient (audited)."""
    auth = auth_state(request)
    posted = await _patient_form(request, auth)
    if isinstance(posted, Response):
        return posted
    user, fields = posted
    try:
        term = consent.parse_term(
            fields.get("term", ""), fields.get("until", ""), auth.server.settings.timezone
        )
        if not term.long_term:
            raise ConsentError("Kies een datum of onbepaalde tijd / Pick a date or indefinitely")
    except ConsentError as exc:
        return _html(error_page(str(exc)), 400)
    changed = await run_in_threadpool(
        _change, auth, request, user, fields.get("consent_id", ""), term
    )
    if not changed:
        return _html(error_page("Onbekende toestemming / Unknown consent"), 404)
    return RedirectResponse(
        f"{patient_session.PATH}?changed=1", status_code=303, headers=HTML_HEADERS
    )


def _change(
    auth: AuthState, request: Request, user: PatientUser, consent_id: str, term: ConsentTerm
) -> bool:
    with auth.server.db.write() as conn:
        record = consent_records.change_end(
            conn, user.patient_id, consent_id[:64], term.ends_at, int(time.time())
        )
        if record is None:
            return False
        what = (
            f"consent changed by the patient: {record.client_id} ({record.consent_id}) now "
            f"{consent.describe_term(term)}"
        )
        _audit_in(conn, auth, request, user, record, what)
    return True


def _audit_in(
    conn: Connection,
    auth: AuthState,
    request: Request,
    user: PatientUser,
    record: ConsentRecord,
    what: str,
) -> None:
    """The AuditEvent of the patient's change to ``record``, in ``conn``'s transaction."""
    actor = Actor(
        client_id=record.client_id,
        user=user.subject,
        token_id=None,
        address=request.client.host if request.client else None,
    )
    access = AccessRecord("consent", outcome="0", description=what, patient_ids=[user.patient_id])
    auth.audit.trail.write_in(conn, actor, access)


def _withdraw(auth: AuthState, request: Request, user: PatientUser, consent_id: str) -> bool:
    with auth.server.db.write() as conn:
        record = consent_records.withdraw(
            conn, user.patient_id, consent_id[:64], int(time.time())
        )
        if record is None:
            return False
        what = f"consent withdrawn by the patient: {record.client_id} ({record.consent_id})"
        _audit_in(conn, auth, request, user, record, what)
    return True
