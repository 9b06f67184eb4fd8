"""Resource types and their search parameters, as data.

Adding a resource type (Flag, CarePlan, Goal, …) means adding a :class:`ResourceType` with its
search parameters here; storage indexes and search pick them up without code changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

ParamType = Literal["token", "reference", "date", "quantity", "string", "uri", "number"]


@dataclass(frozen=True, slots=True)
class SearchParam:
    """A search parameter: its FHIR type and the element paths it indexes.

    ``paths`` are dotted element paths relative to the resource; a trailing ``[x]`` matches a
    choice element (``effective[x]`` → ``effectiveDateTime``, ``effectivePeriod``, …).
    For reference parameters, ``targets`` limits which resource types count (empty = any).
    """

    name: str
    type: ParamType
    paths: tuple[str, ...]
    description: str
    targets: tuple[str, ...] = ()
    definition: str | None = None  # canonical URL, for parameters telemon defines itself


@dataclass(frozen=True, slots=True)
class ResourceType:
    """A resource type the server stores.

    ``compartment`` names the reference parameter that puts an instance in a Patient's compartment
    (``"self"`` for Patient itself). ``primary_date`` names the date parameter kept on the resource
    row itself, so the commonest searches ("this patient's X, newest first") are one index range.
    """

    name: str
    params: dict[str, SearchParam]
    compartment: str | None = None
    primary_date: str | None = None
    sort_params: tuple[str, ...] = ()
    read_only: bool = False
    interactions: tuple[str, ...] = (
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    )
    includes: tuple[str, ...] = field(default=())
    documentation: str | None = None  # for the CapabilityStatement


def _params(*params: SearchParam) -> dict[str, SearchParam]:
    return {p.name: p for p in params}


OBSERVATION = ResourceType(
    name="Observation",
    params=_params(
        SearchParam("patient", "reference", ("subject",), "The subject (a Patient)", ("Patient",)),
        SearchParam("subject", "reference", ("subject",), "The subject of the observation"),
        SearchParam("code", "token", ("code",), "The code of the observation"),
        SearchParam("category", "token", ("category",), "The classification of the observation"),
        SearchParam("date", "date", ("effective[x]",), "Clinically relevant time (effective)"),
        SearchParam("identifier", "token", ("identifier",), "Business identifier"),
        SearchParam("status", "token", ("status",), "The status of the observation"),
        SearchParam("device", "reference", ("device",), "The device that made the measurement"),
        SearchParam(
            "value-quantity", "quantity", ("value[x]",), "The value of the observation (Quantity)"
        ),
        SearchParam("component-code", "token", ("component.code",), "The code of a component"),
    ),
    compartment="patient",
    primary_date="date",
    sort_params=("date",),
    includes=("Observation:patient", "Observation:subject", "Observation:device"),
    documentation="Home measurements. The codes of the vital-signs profiles (supportedProfile; "
    "their code ValueSets) are validated and evaluated by the alert rules; a vital-signs code "
    "in none of them is stored with a warning (OperationOutcome, severity warning, with "
    "Prefer: return=OperationOutcome) when no alert rule of the patient's programmes reads it.",
)

PATIENT = ResourceType(
    name="Patient",
    params=_params(
        SearchParam("identifier", "token", ("identifier",), "A patient identifier (e.g. BSN)"),
        SearchParam("name", "string", ("name",), "Any part of the name (starts-with match)"),
        SearchParam("family", "string", ("name.family",), "Family name"),
        SearchParam("birthdate", "date", ("birthDate",), "The patient's date of birth"),
        SearchParam("gender", "token", ("gender",), "Gender"),
        SearchParam("active", "token", ("active",), "Whether the record is active"),
    ),
    compartment="self",
    primary_date="birthdate",
    sort_params=("birthdate",),
)

DEVICE = ResourceType(
    name="Device",
    params=_params(
        SearchParam("identifier", "token", ("identifier",), "Device identifier (serial, UDI)"),
        SearchParam(
            "patient", "reference", ("patient",), "Patient the device is with", ("Patient",)
        ),
        SearchParam("type", "token", ("type",), "The type of the device"),
        SearchParam("status", "token", ("status",), "Device status"),
    ),
    compartment="patient",
)

FLAG_PRIORITY_URL = "http://hl7.org/fhir/StructureDefinition/flag-priority"
FLAG_DETAIL_URL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
TELEMON_SEARCH_PARAMETER = "http://telemon.example.org/fhir/SearchParameter"
ALERT_PROGRAMME_URL = "http://telemon.example.org/fhir/StructureDefinition/alert-programme"

FLAG = ResourceType(
    name="Flag",
    params=_params(
        SearchParam(
            "patient", "reference", ("subject",), "The patient the alert is about", ("Patient",)
        ),
        SearchParam("subject", "reference", ("subject",), "The subject of the alert"),
        SearchParam(
            "status",
            "token",
            ("status",),
            "active | inactive | entered-in-error",
            definition=f"{TELEMON_SEARCH_PARAMETER}/Flag-status",
        ),
        SearchParam(
            "code",
            "token",
            ("code",),
            "The alert rule (telemon alert-rules code)",
            definition=f"{TELEMON_SEARCH_PARAMETER}/Flag-code",
        ),
        SearchParam(
            "priority",
            "token",
            (f"extension('{FLAG_PRIORITY_URL}').valueCodeableConcept",),
            "Severity: PL (info), PM (orange), PH (red)",
            definition=f"{TELEMON_SEARCH_PARAMETER}/Flag-priority",
        ),
        SearchParam("date", "date", ("period",), "The period the alert covers (start = trigger)"),
        SearchParam(
            "detail",
            "reference",
            (f"extension('{FLAG_DETAIL_URL}').valueReference",),
            "The evidence Observations",
            definition=f"{TELEMON_SEARCH_PARAMETER}/Flag-detail",
        ),
        SearchParam("identifier", "token", ("identifier",), "Business identifier"),
        SearchParam(
            "programme",
            "reference",
            (f"extension('{ALERT_PROGRAMME_URL}').valueCanonical",),
            "The telemonitoring programme of the alert (PlanDefinition canonical URL)",
            ("PlanDefinition",),
            definition=f"{TELEMON_SEARCH_PARAMETER}/Flag-programme",
        ),
    ),
    compartment="patient",
    primary_date="date",
    sort_params=("date",),
    includes=("Flag:detail", "Flag:patient", "Flag:subject"),
)

CARE_PLAN = ResourceType(
    name="CarePlan",
    params=_params(
        SearchParam("patient", "reference", ("subject",), "The patient enrolled", ("Patient",)),
        SearchParam("subject", "reference", ("subject",), "Who the plan is for"),
        SearchParam("status", "token", ("status",), "draft | active | on-hold | …"),
        SearchParam("intent", "token", ("intent",), "proposal | plan | order | option"),
        SearchParam(
            "instantiates-canonical",
            "reference",
            ("instantiatesCanonical",),
            "The programme (PlanDefinition canonical URL)",
        ),
        SearchParam("goal", "reference", ("goal",), "Personal targets (Goals)", ("Goal",)),
        SearchParam("date", "date", ("period",), "Time period the plan covers"),
        SearchParam("category", "token", ("category",), "Type of plan"),
        SearchParam("identifier", "token", ("identifier",), "Business identifier"),
    ),
    compartment="patient",
    primary_date="date",
    sort_params=("date",),
    includes=("CarePlan:goal", "CarePlan:patient", "CarePlan:subject"),
)

GOAL = ResourceType(
    name="Goal",
    params=_params(
        SearchParam("patient", "reference", ("subject",), "The patient", ("Patient",)),
        SearchParam("subject", "reference", ("subject",), "Who the goal is for"),
        SearchParam("lifecycle-status", "token", ("lifecycleStatus",), "proposed | active | …"),
        SearchParam("target-measure", "token", ("target.measure",), "The measured quantity"),
        SearchParam("start-date", "date", ("start[x]",), "When the goal starts"),
        SearchParam("identifier", "token", ("identifier",), "Business identifier"),
    ),
    compartment="patient",
    primary_date="start-date",
    sort_params=("start-date",),
)

#: Care providers (clinicians). Not in a patient compartment; a clinician logs in to the
#: dashboard with the UZI number in ``identifier`` (:mod:`service.auth.identity`).
PRACTITIONER = ResourceType(
    name="Practitioner",
    params=_params(
        SearchParam("identifier", "token", ("identifier",), "A practitioner identifier (UZI, AGB)"),
        SearchParam("name", "string", ("name",), "Any part of the name (starts-with match)"),
        SearchParam("family", "string", ("name.family",), "Family name"),
        SearchParam("active", "token", ("active",), "Whether the record is active"),
    ),
)

#: FHIR R4 Subscriptions (rest-hook) on alert Flags, for backend services; see
#: service/subscriptions. Not in a patient compartment: patient tokens never see them.
SUBSCRIPTION = ResourceType(
    name="Subscription",
    params=_params(
        SearchParam("status", "token", ("status",), "requested | active | error | off"),
        SearchParam("type", "token", ("channel.type",), "The channel type (rest-hook)"),
        SearchParam("url", "uri", ("channel.endpoint",), "The channel endpoint"),
        SearchParam("criteria", "string", ("criteria",), "The criteria (Flag?…)"),
    ),
    documentation="Channel `rest-hook` only, criteria on `Flag` only (a Flag search); payload "
    "`application/fhir+json` with the Subscriptions R5 Backport `backport-payload-content` "
    "(`full-resource` default, `id-only`, `empty`), `backport-heartbeat-period`, "
    "`backport-timeout` and `backport-max-count`; notifications are R4 backport notification "
    "Bundles, HMAC-signed (`X-Telemon-Signature`) and/or with the channel's headers. Backend "
    "services (system scopes) only; `status` and `error` are set by the server.",
)

#: The NEN 7513 audit trail: written only by the server (service/audit), append-only, so no
#: create/update/delete through the API (405). Its compartment is the patient the event is about.
AUDIT_EVENT = ResourceType(
    name="AuditEvent",
    params=_params(
        SearchParam(
            "patient", "reference", ("entity.what",), "The patient the event is about", ("Patient",)
        ),
        SearchParam("date", "date", ("recorded",), "When the event was recorded"),
        SearchParam("agent", "reference", ("agent.who",), "Who took part (user, organisation)"),
        SearchParam("altid", "token", ("agent.altId",), "Alternative agent id (OAuth client_id)"),
        SearchParam("entity", "reference", ("entity.what",), "The resource the event concerns"),
        SearchParam("entity-type", "token", ("entity.type",), "The type of entity involved"),
        SearchParam("type", "token", ("type",), "The type of event"),
        SearchParam("subtype", "token", ("subtype",), "The restful interaction"),
        SearchParam("action", "token", ("action",), "C | R | U | D | E"),
        SearchParam("outcome", "token", ("outcome",), "0 | 4 | 8 | 12"),
    ),
    compartment="patient",
    primary_date="date",
    sort_params=("date",),
    read_only=True,
    interactions=("read", "vread", "search-type"),
)

#: Parameters every type has; evaluated against the resource row, never indexed separately.
COMMON_PARAMS: dict[str, SearchParam] = _params(
    SearchParam("_id", "token", ("id",), "Logical id"),
    SearchParam("_lastUpdated", "date", ("meta.lastUpdated",), "When the resource last changed"),
)


class Registry:
    """The resource types this server knows, by name."""

    def __init__(self, types: Iterable[ResourceType]) -> None:
        self._types = {t.name: t for t in types}

    def get(self, name: str) -> ResourceType | None:
        """The type called ``name``, or None."""
        return self._types.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(self._types.values())

    def names(self) -> list[str]:
        """All type names, sorted."""
        return sorted(self._types)


def default_registry() -> Registry:
    """The registry of the types served by this version of telemon."""
    return Registry(
        [PATIENT, DEVICE, OBSERVATION, FLAG, CARE_PLAN, GOAL, PRACTITIONER, SUBSCRIPTION,
         AUDIT_EVENT]
    )
