"""Building AuditEvent resources (FHIR R4, IHE BALP patterns) for NEN 7513.

NEN 7513 asks per event: which event, when, which patient, who the user was and on whose
behalf, plus the access point and the authorisation used. The mapping (docs/security.md):
``subtype``/``action`` = what, ``recorded`` = when, ``entity[patient]`` = which patient,
``agent[user]`` = who (``requestor``), ``agent[client]`` = the OAuth client (``altId``) and its
network address, ``agent.policy`` = the token id, ``entity[query]`` = the search, and
``entity[transaction]`` = the request/correlation ids (X-Request-Id, MedMij-Request-ID,
X-Correlation-ID). A search spanning patients gives one event per patient (BALP).

Besides FHIR interactions, :data:`SECURITY_EVENTS` covers patient and clinician logins (and
requests without a valid token), clinician logouts, consent decisions and token requests, with
BALP's types and subtypes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from service.core.indexing import IndexValues, split_reference

AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
CLIENT_ID_SYSTEM = "urn:ietf:params:oauth:client-id"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP_AUTHZ = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
IHE_EVENT = "urn:ihe:event-type-code"
JTI_PREFIX = "urn:ietf:params:oauth:jti:"

#: Events that are not a RESTful interaction: interaction → (AuditEvent.type, subtype) (BALP).
SECURITY_EVENTS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    # a patient login, or a FHIR request without a valid token
    "login": (
        {"system": DCM, "code": "110114", "display": "User Authentication"},
        {"system": DCM, "code": "110122", "display": "Login"},
    ),
    # a clinician's dashboard logout
    "logout": (
        {"system": DCM, "code": "110114", "display": "User Authentication"},
        {"system": DCM, "code": "110123", "display": "Logout"},
    ),
    # the patient's consent decision (BALP AuthZconsent)
    "consent": (
        {"system": DCM, "code": "110113", "display": "Security Alert"},
        {"system": BALP_AUTHZ, "code": "AuthZ-Consent", "display": "Authorization Decision"},
    ),
    # a token request (BALP/IUA "Get Access Token"), failed ones included
    "token": (
        {"system": DCM, "code": "110114", "display": "User Authentication"},
        {"system": IHE_EVENT, "code": "ITI-71", "display": "Get Access Token"},
    ),
}

#: restful-interaction code → AuditEvent.action
ACTIONS = {
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "history-type": "R",
    "search-type": "E",
    "operation": "E",
    "create": "C",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "transaction": "E",
    "batch": "E",
    "login": "E",
    "logout": "E",
    "consent": "E",
    "token": "E",
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted, through which client, from where, under which token."""

    client_id: str | None
    user: str | None  # a reference such as "Patient/123", or None for a system client
    token_id: str | None
    address: str | None
    request_ids: tuple[tuple[str, str], ...] = ()  # (header name, value)


@dataclass(slots=True)
class Touched:
    """One resource version an interaction read or wrote."""

    res_type: str
    res_id: str
    version_id: int | None
    patient_id: str | None


@dataclass(slots=True)
class AccessRecord:
    """One interaction to audit."""

    interaction: str
    res_type: str | None = None
    query: str | None = None
    outcome: str = "0"  # 0 success, 4 minor failure (4xx), 8 serious failure (5xx)
    description: str | None = None
    touched: list[Touched] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)  # patients concerned beyond touched
    issued_token: str | None = None  # the jti of an access token issued by this event


def clean(text: str) -> str:
    """``text`` storable on both backends: NUL (which PostgreSQL refuses in text) and lone
    surrogates (not UTF-8) become U+FFFD. Audited values such as a claimed client id or an
    error message come from the request, and a request that cannot be stored must still be
    audited."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def clean_actor(actor: Actor) -> Actor:
    """``actor`` with every value storable (see :func:`clean`)."""
    return Actor(
        client_id=clean(actor.client_id) if actor.client_id else actor.client_id,
        user=clean(actor.user) if actor.user else actor.user,
        token_id=clean(actor.token_id) if actor.token_id else actor.token_id,
        address=clean(actor.address) if actor.address else actor.address,
        request_ids=tuple((clean(k), clean(v)) for k, v in actor.request_ids),
    )


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _agents(actor: Actor) -> list[dict[str, Any]]:
    network = {"address": actor.address, "type": "2"} if actor.address else None
    client = (
        {"identifier": {"system": CLIENT_ID_SYSTEM, "value": actor.client_id}}
        if actor.client_id
        else {"display": "unauthenticated"}
    )
    user: dict[str, Any] = {
        "type": {"coding": [_coding(PARTICIPATION, "IRCP", "information recipient")]},
        "who": {"reference": actor.user} if actor.user else client,
        "requestor": True,
    }
    if actor.client_id:
        user["altId"] = actor.client_id
    if actor.token_id:
        user["policy"] = [actor.token_id]
    source: dict[str, Any] = {
        "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
        "who": client,
        "requestor": False,
    }
    if actor.client_id:
        source["altId"] = actor.client_id
    if network:
        source["network"] = network
    server = {
        "type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
        "who": {"display": "telemon"},
        "requestor": False,
    }
    return [user, source, server]


def _data_entity(t: Touched) -> dict[str, Any]:
    ref = f"{t.res_type}/{t.res_id}"
    if t.version_id is not None:
        ref += f"/_history/{t.version_id}"
    return {
        "what": {"reference": ref},
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
    }


def build(actor: Actor, record: AccessRecord, recorded: str) -> list[dict[str, Any]]:
    """The AuditEvents for one interaction: one per patient concerned (at least one)."""
    actor = clean_actor(actor)
    by_patient: dict[str | None, list[Touched]] = {}
    for t in record.touched:
        by_patient.setdefault(t.patient_id, []).append(t)
    for pid in record.patient_ids:
        by_patient.setdefault(pid, [])
    patients = [p for p in by_patient if p is not None]
    unassigned = by_patient.get(None, [])  # data outside any compartment
    if not patients:
        return [_event(actor, record, recorded, None, unassigned)]
    return [
        _event(actor, record, recorded, p, by_patient[p] + (unassigned if i == 0 else []))
        for i, p in enumerate(patients)
    ]


def _event(
    actor: Actor,
    record: AccessRecord,
    recorded: str,
    patient: str | None,
    touched: list[Touched],
) -> dict[str, Any]:
    entities: list[dict[str, Any]] = []
    if patient is not None:
        entities.append(
            {
                "what": {"reference": f"Patient/{patient}"},
                "type": _coding(ENTITY_TYPE, "1", "Person"),
                "role": _coding(OBJECT_ROLE, "1", "Patient"),
            }
        )
    entities.extend(_data_entity(t) for t in touched)
    if record.query is not None:
        entities.append(
            {
                "type": _coding(ENTITY_TYPE, "2", "System Object"),
                "role": _coding(OBJECT_ROLE, "24", "Query"),
                "description": record.res_type or "",
                "query": base64.b64encode(clean(record.query).encode()).decode(),
            }
        )
    if record.issued_token is not None:
        entities.append(
            {
                "what": {"identifier": {"value": JTI_PREFIX + record.issued_token}},
                "type": _coding(ENTITY_TYPE, "2", "System Object"),
                "role": _coding(OBJECT_ROLE, "13", "Security Resource"),
            }
        )
    for name, value in actor.request_ids:
        entities.append(
            {
                "what": {"identifier": {"value": value}},
                "type": _coding(BALP_ENTITY, "XrequestId", name),
            }
        )
    if record.interaction in SECURITY_EVENTS:
        event_type, subtype = SECURITY_EVENTS[record.interaction]
    else:
        event_type = _coding(AUDIT_TYPE, "rest", "RESTful Operation")
        code = record.interaction if record.interaction in ACTIONS else "operation"
        subtype = _coding(INTERACTION, code)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": event_type,
        "subtype": [subtype],
        "action": ACTIONS.get(record.interaction, "E"),
        "recorded": recorded,
        "outcome": record.outcome,
        "agent": _agents(actor),
        "source": {
            "observer": {"display": "telemon"},
            "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
        },
    }
    if record.description:
        event["outcomeDesc"] = clean(record.description[:1000])
    if entities:
        event["entity"] = entities
    return event


def index_values(event: dict[str, Any], recorded_micros: int) -> IndexValues:
    """The search-index values of an event from :func:`build` (recorded at ``recorded_micros``,
    millisecond precision), computed from its known shape.

    The same values as the registry-driven ``service.core.indexing.extract`` (a test compares
    the two) at a fraction of its cost: every access writes an event, so its indexing is on
    the path of every request. Repeated values are indexed once (a search's event names twenty
    resources of one entity type): an index row says only that the value occurs.
    """
    entities: list[dict[str, Any]] = event.get("entity", [])
    agents: list[dict[str, Any]] = event["agent"]
    whats = [_target(e.get("what")) for e in entities]
    agent_refs = [("agent", *t) for t in (_target(a["who"]) for a in agents) if t]
    references = [("patient", *t) for t in whats if t and t[0] == "Patient"]
    references += agent_refs
    references += [("entity", *t) for t in whats if t]
    tokens: list[tuple[str, str | None, str]] = [
        ("altid", None, a["altId"]) for a in agents if "altId" in a
    ]
    tokens += [("entity-type", e["type"].get("system"), e["type"]["code"]) for e in entities]
    tokens.append(("type", event["type"].get("system"), event["type"]["code"]))
    tokens += [("subtype", s.get("system"), s["code"]) for s in event["subtype"]]
    tokens.append(("action", None, event["action"]))
    tokens.append(("outcome", None, event["outcome"]))
    patient = next((i for name, t, i in references if name == "patient"), None)
    return IndexValues(
        patient_id=patient,
        date_low=recorded_micros,
        date_high=recorded_micros + 999,
        tokens=list(dict.fromkeys(tokens)),
        references=list(dict.fromkeys(references)),
    )


def _target(what: Any) -> tuple[str, str] | None:
    ref = what.get("reference") if isinstance(what, dict) else None
    return split_reference(ref) if isinstance(ref, str) else None
