"""What a Subscription resource asks for, checked, and the form in which telemon keeps it.

A client writes an R4 ``Subscription`` with ``channel.type = rest-hook``, classic ``criteria`` on
Flag (``Flag?status=active&patient=Patient/123``), ``channel.payload = application/fhir+json``
and the Subscriptions R5 Backport extensions: ``backport-payload-content`` on the payload
(``full-resource``, ``id-only`` or ``empty``; default ``full-resource``), and on the channel
``backport-heartbeat-period``, ``backport-timeout`` and ``backport-max-count``.

Authentication of the notifications, at least one of:

- ``channel.header``: headers to send, e.g. ``Authorization: Bearer …``;
- the ``subscription-signing-secret`` extension on ``channel``: a secret of at least
  :data:`MIN_SECRET_LENGTH` characters; every notification is then signed with HMAC-SHA256.

Both are secrets: telemon keeps them apart from the resource and returns them as
:data:`REDACTED`; writing :data:`REDACTED` back keeps the stored value. ``status`` and ``error``
are the server's: ``off`` from the client turns the Subscription off, any other status asks for
it to be active; delivery failures set ``error``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import parse_qsl

from service.core.dates import DateFormatError, parse_range
from service.core.outcome import FhirError, Issue

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
EXT_PAYLOAD_CONTENT = f"{BACKPORT}/backport-payload-content"
EXT_HEARTBEAT = f"{BACKPORT}/backport-heartbeat-period"
EXT_TIMEOUT = f"{BACKPORT}/backport-timeout"
EXT_MAX_COUNT = f"{BACKPORT}/backport-max-count"
EXT_SECRET = "http://telemon.example.org/fhir/StructureDefinition/subscription-signing-secret"
REDACTED = "[redacted]"
PAYLOAD_TYPE = "application/fhir+json"
CONTENTS = ("full-resource", "id-only", "empty")
MIN_SECRET_LENGTH = 32
CRITERIA_TYPE = "Flag"
#: Result-shaping search parameters: meaningless for matching one Flag, so refused in criteria.
CONTROL_PARAMS = frozenset(
    {"_count", "_sort", "_include", "_revinclude", "_summary", "_total", "_cursor", "_format",
     "_pretty", "_elements", "_contained", "_containedType"}
)
#: Headers telemon sets itself (or that would break the request); refused in channel.header.
RESERVED_HEADERS = frozenset(
    {"host", "content-type", "content-length", "transfer-encoding", "connection", "keep-alive",
     "te", "trailer", "upgrade", "proxy-authorization", "user-agent", "x-telemon-signature"}
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_EXPR = "Subscription"


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """The delivery settings of a Subscription, as checked (secrets may be :data:`REDACTED`)."""

    criteria: str
    params: tuple[tuple[str, str], ...]  # the criteria's search parameters
    endpoint: str
    content: str  # full-resource | id-only | empty
    heartbeat_seconds: int  # 0: none
    timeout_seconds: float | None
    max_count: int | None
    headers: tuple[tuple[str, str], ...]  # (name, value)
    secret: str | None
    active: bool  # False: the client set status 'off'
    end_at: int | None  # Subscription.end, microseconds

    @property
    def authenticated(self) -> bool:
        """True when notifications carry a header (e.g. a bearer token) or a signature."""
        return bool(self.headers) or self.secret is not None


def _ext(element: dict[str, Any], url: str) -> tuple[int, dict[str, Any]] | None:
    for index, ext in enumerate(element.get("extension", [])):
        if isinstance(ext, dict) and ext.get("url") == url:
            return index, ext
    return None


def criteria_params(criteria: str) -> tuple[tuple[str, str], ...]:
    """The search parameters of ``Flag?…`` criteria (422 for another type or a control
    parameter); whether they are known parameters is the search parser's job."""
    where = f"{_EXPR}.criteria"
    res_type, _, query = criteria.strip().partition("?")
    if res_type != CRITERIA_TYPE:
        raise FhirError.unsupported_content(
            f"Subscriptions are supported on {CRITERIA_TYPE} only: criteria must be "
            f"'{CRITERIA_TYPE}' or '{CRITERIA_TYPE}?…', not '{criteria}'",
            where,
        )
    params = tuple(parse_qsl(query, keep_blank_values=True))
    for name, _ in params:
        if name.partition(":")[0] in CONTROL_PARAMS:
            raise FhirError.unsupported_content(
                f"'{name}' has no meaning in Subscription criteria", where
            )
    return params


def read_spec(data: dict[str, Any]) -> SubscriptionSpec:
    """Check a structurally valid Subscription and read its delivery settings (422 with every
    problem found, each naming its element)."""
    issues: list[Issue] = []

    def bad(message: str, where: str, code: str = "value") -> None:
        issues.append(Issue(code, message, (f"{_EXPR}.{where}",)))

    channel = data.get("channel") or {}
    if channel.get("type") != "rest-hook":
        bad(f"Only rest-hook channels are supported, not '{channel.get('type')}'", "channel.type",
            "not-supported")
    endpoint = channel.get("endpoint")
    if not endpoint:
        bad("A rest-hook channel needs an endpoint", "channel.endpoint", "required")
    payload = channel.get("payload")
    content = "empty"
    if payload is not None:
        if payload != PAYLOAD_TYPE:
            bad(f"The payload must be '{PAYLOAD_TYPE}', not '{payload}'", "channel.payload",
                "not-supported")
        content = "full-resource"
        found = _ext(data["channel"].get("_payload") or {}, EXT_PAYLOAD_CONTENT)
        if found is not None:
            content = found[1].get("valueCode", "")
            if content not in CONTENTS:
                bad(f"The payload content must be one of {', '.join(CONTENTS)}, not '{content}'",
                    f"channel.payload.extension[{found[0]}].valueCode")
    heartbeat = _unsigned(channel, EXT_HEARTBEAT, "valueUnsignedInt", bad) or 0
    timeout = _unsigned(channel, EXT_TIMEOUT, "valueUnsignedInt", bad)
    max_count = _unsigned(channel, EXT_MAX_COUNT, "valuePositiveInt", bad)
    headers = _headers(channel.get("header", []), bad)
    secret = _secret(channel, bad)
    params: tuple[tuple[str, str], ...] = ()
    try:
        params = criteria_params(str(data.get("criteria", "")))
    except FhirError as exc:
        issues.extend(exc.issues)
    end_at = None
    if data.get("end"):
        try:
            end_at = parse_range(data["end"], UTC)[0]
        except DateFormatError:
            bad(f"'{data['end']}' is not a valid instant", "end")
    spec = SubscriptionSpec(
        criteria=str(data.get("criteria", "")).strip(),
        params=params,
        endpoint=str(endpoint or ""),
        content=content,
        heartbeat_seconds=heartbeat,
        timeout_seconds=float(timeout) if timeout else None,
        max_count=max_count,
        headers=headers,
        secret=secret,
        active=data.get("status") != "off",
        end_at=end_at,
    )
    if not issues and not spec.authenticated:
        bad(
            "Notifications must be authenticated: give channel.header "
            "(e.g. 'Authorization: Bearer …') or a signing secret (extension "
            f"{EXT_SECRET}, at least {MIN_SECRET_LENGTH} characters)",
            "channel",
            "required",
        )
    if issues:
        raise FhirError.rejected(issues)
    return spec


def _unsigned(channel: dict[str, Any], url: str, key: str, bad: Any) -> int | None:
    found = _ext(channel, url)
    if found is None:
        return None
    value = found[1].get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < (key == "valuePositiveInt"):
        bad(f"Extension {url} needs a {key} (a whole number)",
            f"channel.extension[{found[0]}]")
        return None
    return value


def _headers(raw: list[Any], bad: Any) -> tuple[tuple[str, str], ...]:
    out = []
    for index, line in enumerate(raw):
        name, sep, value = str(line).partition(":")
        name, value = name.strip(), value.strip()
        where = f"channel.header[{index}]"
        if not sep or not _HEADER_NAME.match(name) or not value:
            bad("A header must read 'Name: value'", where)
        elif name.lower() in RESERVED_HEADERS:
            bad(f"The header '{name}' is set by telemon and cannot be given", where)
        elif any(c in value for c in "\r\n\0"):
            bad("A header value must be one line", where)
        else:
            out.append((name, value))
    return tuple(out)


def _secret(channel: dict[str, Any], bad: Any) -> str | None:
    found = _ext(channel, EXT_SECRET)
    if found is None:
        return None
    value = found[1].get("valueString")
    if value == REDACTED:
        return REDACTED
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        bad(f"The signing secret needs at least {MIN_SECRET_LENGTH} characters",
            f"channel.extension[{found[0]}].valueString")
        return None
    return value


def stored_form(data: dict[str, Any], status: str) -> dict[str, Any]:
    """The resource as stored and returned: secrets replaced by :data:`REDACTED`, the server's
    ``status``, and no ``error`` (the server sets that when delivery fails)."""
    out = copy.deepcopy(data)
    out["status"] = status
    out.pop("error", None)
    channel = out.get("channel") or {}
    if channel.get("header"):
        channel["header"] = [
            f"{str(h).partition(':')[0].strip()}: {REDACTED}" for h in channel["header"]
        ]
    found = _ext(channel, EXT_SECRET)
    if found is not None:
        found[1]["valueString"] = REDACTED
    return out


def unredact(
    spec: SubscriptionSpec,
    stored_headers: list[tuple[str, str]],
    stored_secret: str | None,
) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """The real headers and secret for ``spec``: a :data:`REDACTED` value takes the stored
    value of the same header (or the stored secret); 422 when there is none to keep."""
    stored = {name.lower(): value for name, value in stored_headers}
    headers = []
    for index, (name, value) in enumerate(spec.headers):
        if value == REDACTED:
            if name.lower() not in stored:
                raise FhirError.invalid_value(
                    f"'{name}: {REDACTED}' keeps a stored value, but there is none",
                    f"{_EXPR}.channel.header[{index}]",
                )
            value = stored[name.lower()]
        headers.append((name, value))
    secret = spec.secret
    if secret == REDACTED:
        if stored_secret is None:
            raise FhirError.invalid_value(
                f"A signing secret of '{REDACTED}' keeps the stored one, but there is none",
                f"{_EXPR}.channel.extension",
            )
        secret = stored_secret
    return tuple(headers), secret
