"""The login and consent pages: tiny server-rendered HTML, no scripts, no external resources."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape
from string import Template
from urllib.parse import urlsplit

_PAGE = Template("""<!doctype html>
<html lang="nl"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>body{font-family:sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}
.en{color:#555;font-size:.9em}.warn{background:#fff3cd;padding:.5rem}.err{color:#a00}
button{padding:.5rem 1rem;margin-right:.5rem}</style></head>
<body>$body</body></html>""")

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: Headers for every HTML page: no framing, no caching, no third-party anything.
HTML_HEADERS = {
    "Content-Security-Policy": _CSP.format(form_action="'self'"),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_SCHEME = re.compile(r"^https?$")
_HOST = re.compile(r"^[a-z0-9.-]+$|^\[[0-9a-f:.]+\]$")


def _origin_source(redirect_uri: str) -> str | None:
    """``redirect_uri``'s origin as a CSP source expression (None if it cannot be one)."""
    try:
        parts = urlsplit(redirect_uri)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    if not _SCHEME.match(parts.scheme) or not _HOST.match(host):
        return None  # never put what could break out of the header into it
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def html_headers(redirect_uri: str | None = None) -> dict[str, str]:
    """:data:`HTML_HEADERS` for a page whose form may end in a redirect to ``redirect_uri``.

    Browsers apply ``form-action`` to the redirects that follow a form post too, so the login
    and consent pages allow this server and the origin of the client's registered redirect URI
    of this very authorization request, and nothing else.
    """
    source = _origin_source(redirect_uri) if redirect_uri else None
    if source is None:
        return HTML_HEADERS
    csp = _CSP.format(form_action=f"'self' {source}")
    return {**HTML_HEADERS, "Content-Security-Policy": csp}


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'


def login_page(
    tx: str, csrf: str, label: str, error: str | None = None, action: str = "/oauth/login"
) -> str:
    """The simulated DigiD login form (one field: ``bsn``), posted to ``action``."""
    err = f'<p class="err">{escape(error)}</p>' if error else ""
    body = f"""<h1>Inloggen met DigiD <span class="en">/ Log in with DigiD</span></h1>
<p class="warn"><strong>{escape(label)}</strong></p>{err}
<form method="post" action="{escape(action)}">{_hidden("tx", tx)}{_hidden("csrf_token", csrf)}
<label for="bsn">Burgerservicenummer (BSN)</label><br>
<input id="bsn" name="bsn" inputmode="numeric" autocomplete="off" required maxlength="9"><br><br>
<button type="submit">Inloggen <span class="en">/ Log in</span></button></form>"""
    return _PAGE.substitute(title="Inloggen / Log in", body=body)


_TERM = """<fieldset><legend>Hoe lang? <span class="en">/ For how long?</span></legend>
<label><input type="radio" name="term" value="once" checked> Alleen nu: {minutes} minuten,
daarna vraagt de app opnieuw <span class="en">(This once: {minutes} minutes, then the app
asks again)</span></label><br>
<label><input type="radio" name="term" value="until"> Langdurig, tot en met
<span class="en">(Long-term, up to and including)</span></label>
<input type="date" name="until" min="{today}" aria-label="einddatum / end date"><br>
<label><input type="radio" name="term" value="indefinite"> Langdurig, voor onbepaalde tijd
<span class="en">(Long-term, indefinitely)</span></label>
<p class="en">Langdurige toestemming vervalt als de app een half jaar geen gebruik maakt van
uw gegevens; u kunt haar altijd intrekken op /oauth/consents. <br>A long-term consent lapses
after six months without use by the app; you can withdraw it at any time at
/oauth/consents.</p></fieldset>"""


def consent_page(
    tx: str,
    csrf: str,
    client_name: str,
    lines: list[tuple[str, str]],
    minutes: int,
    today: str,
) -> str:
    """The consent page: which app, which data, for how long; allow or deny.

    The duration is this once (preselected: today's behaviour) or long-term, until a date the
    patient picks or indefinitely; neither long-term choice is ever preselected (MedMij).
    """
    items = "".join(
        f'<li>{escape(nl)} <span class="en">({escape(en)})</span></li>' for nl, en in lines
    )
    body = f"""<h1>Toestemming <span class="en">/ Consent</span></h1>
<p>De app <strong>{escape(client_name)}</strong> vraagt toegang tot:<br>
<span class="en">The app <strong>{escape(client_name)}</strong> asks for access to:</span></p>
<ul>{items}</ul>
<form method="post" action="/oauth/consent">{_hidden("tx", tx)}{_hidden("csrf_token", csrf)}
{_TERM.format(minutes=minutes, today=escape(today))}
<button type="submit" name="decision" value="allow">Toestaan <span class="en">/ Allow</span>
</button><button type="submit" name="decision" value="deny">Weigeren
<span class="en">/ Deny</span></button></form>"""
    return _PAGE.substitute(title="Toestemming / Consent", body=body)


@dataclass(frozen=True, slots=True)
class ConsentRow:
    """One app with access, as the consent overview shows it (dates already formatted)."""

    consent_id: str
    app: str
    since: str
    until: tuple[str, str]  # (Dutch, English)
    last_exchange: str
    long_term: bool = False


def _change_form(row: ConsentRow, csrf: str) -> str:
    """Move a long-term consent's end: a date or indefinitely (neither preselected)."""
    return f"""<form method="post" action="/oauth/consents/change">
{_hidden("csrf_token", csrf)}{_hidden("consent_id", row.consent_id)}
<label><input type="radio" name="term" value="until" required> tot en met
<span class="en">(until)</span></label> <input type="date" name="until"
aria-label="einddatum / end date"><label><input type="radio" name="term" value="indefinite">
onbepaalde tijd <span class="en">(indefinitely)</span></label>
<button type="submit">Wijzigen <span class="en">/ Change</span></button></form>"""


def consents_page(rows: list[ConsentRow], csrf: str, notice: str | None = None) -> str:
    """The patient's overview: every app with access, since and until when, last exchange;
    a withdraw button per app."""
    items = "".join(
        f"""<tr><td>{escape(r.app)}</td><td>{escape(r.since)}</td>
<td>{escape(r.until[0])} <span class="en">({escape(r.until[1])})</span></td>
<td>{escape(r.last_exchange)}</td><td><form method="post" action="/oauth/consents/withdraw">
{_hidden("csrf_token", csrf)}{_hidden("consent_id", r.consent_id)}
<button type="submit">Intrekken <span class="en">/ Withdraw</span></button></form>
{_change_form(r, csrf) if r.long_term else ""}</td></tr>"""
        for r in rows
    )
    table = (
        f"""<table><tr><th>App</th><th>Sinds <span class="en">/ Since</span></th>
<th>Tot <span class="en">/ Until</span></th><th>Laatst gebruikt
<span class="en">/ Last exchange</span></th><th></th></tr>{items}</table>"""
        if rows
        else """<p>Geen enkele app heeft toegang. <span class="en">No app has access.</span></p>"""
    )
    note = f'<p class="warn">{escape(notice)}</p>' if notice else ""
    body = f"""<h1>Uw toestemmingen <span class="en">/ Your consents</span></h1>{note}
<p>Deze apps hebben toegang tot uw gegevens. Intrekken werkt direct.<br>
<span class="en">These apps have access to your data. Withdrawing takes effect at once.</span></p>
{table}<form method="post" action="/oauth/consents/logout">{_hidden("csrf_token", csrf)}
<button type="submit">Uitloggen <span class="en">/ Log out</span></button></form>"""
    return _PAGE.substitute(title="Toestemmingen / Consents", body=body)


def error_page(message: str) -> str:
    """An error shown to the user instead of redirecting (bad client or redirect URI)."""
    body = f"""<h1>Er ging iets mis <span class="en">/ Something went wrong</span></h1>
<p class="err">{escape(message)}</p>"""
    return _PAGE.substitute(title="Fout / Error", body=body)
