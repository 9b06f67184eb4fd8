"""The OpenAPI document: every FHIR interaction per resource type, with its search parameters
and the shape of its resources, plus the OAuth endpoints and the browser forms.

FastAPI's own document describes the FHIR routes as ``/fhir/{res_type}`` with a free-form body,
which tells a client (or a property-based tester such as schemathesis) nothing. This one is
built from the registry (types, interactions, search parameters) and from the fhir.resources
models (the elements of each resource), so it stays true as types and parameters are added.
"""

from __future__ import annotations

import typing
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from service.api.conformance import CONFORMANCE_TYPES
from service.core.registry import COMMON_PARAMS, Registry, ResourceType, SearchParam
from service.fhir.search import chain_target, revinclude_names

FHIR_JSON = "application/fhir+json"
FORM = "application/x-www-form-urlencoded"
ID_PATTERN = r"^[A-Za-z0-9\-.]{1,64}$"

#: Elements left out of the resource bodies: server-managed or not used by telemon's clients.
_SKIPPED = {"fhir_comments", "meta", "implicitRules", "language", "contained", "text"}

_STRING = {"type": "string", "minLength": 1}
_DATE_TIME = {"type": "string", "format": "date-time"}
_URI = {"type": "string", "format": "uri"}

#: Compact schemas of the datatypes telemon indexes or checks (the others stay open objects).
_CODING = {
    "type": "object",
    "properties": {"system": _URI, "code": _STRING, "display": _STRING},
    "additionalProperties": False,
}
_DATATYPES: dict[str, dict[str, Any]] = {
    "Coding": _CODING,
    "CodeableConcept": {
        "type": "object",
        "properties": {
            "coding": {"type": "array", "items": _CODING, "minItems": 1},
            "text": _STRING,
        },
        "additionalProperties": False,
    },
    "Identifier": {
        "type": "object",
        "properties": {"system": _URI, "value": _STRING},
        "additionalProperties": False,
    },
    "Reference": {
        "type": "object",
        "properties": {"reference": _STRING, "display": _STRING},
        "additionalProperties": False,
    },
    "Quantity": {
        "type": "object",
        "properties": {
            "value": {"type": "number"},
            "unit": _STRING,
            "system": _URI,
            "code": _STRING,
        },
        "additionalProperties": False,
    },
    "Period": {
        "type": "object",
        "properties": {"start": _DATE_TIME, "end": _DATE_TIME},
        "additionalProperties": False,
    },
    "HumanName": {
        "type": "object",
        "properties": {
            "family": _STRING,
            "given": {"type": "array", "items": _STRING, "minItems": 1},
            "text": _STRING,
        },
        "additionalProperties": False,
    },
    "Extension": {
        "type": "object",
        "properties": {
            "url": _URI,
            "valueCode": _STRING,
            "valueString": _STRING,
            "valueCanonical": _URI,
            "valueCodeableConcept": {"$ref": "#/components/schemas/CodeableConcept"},
            "valueReference": {"$ref": "#/components/schemas/Reference"},
        },
        "required": ["url"],
        "additionalProperties": False,
    },
}
_PRIMITIVES: dict[str, dict[str, Any]] = {
    "DateTime": _DATE_TIME,
    "Instant": _DATE_TIME,
    "Date": {"type": "string", "format": "date"},
    "Time": {"type": "string", "pattern": r"^\d{2}:\d{2}:\d{2}$"},
    "Uri": _URI,
    "Url": _URI,
    "Canonical": _URI,
    "Id": {"type": "string", "pattern": ID_PATTERN},
    "Integer": {"type": "integer"},
    "PositiveInt": {"type": "integer", "minimum": 1},
    "UnsignedInt": {"type": "integer", "minimum": 0},
    "Decimal": {"type": "number"},
    "Boolean": {"type": "boolean"},
}

#: How each kind of search parameter is written (FHIR R4 search section 3.1.1.4).
_PARAM_SYNTAX = {
    "token": "`[system]|[code]`, `code` or `system|`",
    "reference": "`[Type/]id` or an absolute URL",
    "date": "a date or dateTime, with a prefix (`eq`, `ne`, `gt`, `lt`, `ge`, `le`, `sa`, `eb`, "
    "`ap`), e.g. `ge2024-01-01`",
    "quantity": "`[prefix]number[|system|code]`, e.g. `gt90|http://unitsofmeasure.org|mm[Hg]`",
    "string": "starts with (case and accents ignored); `:exact`, `:contains`",
    "uri": "starts with; `:exact`, `:contains`",
    "number": "`[prefix]number`",
}


def _element_schema(annotation: Any, extra: dict[str, Any], depth: int) -> dict[str, Any]:
    """The JSON schema of one element from its fhir.resources annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _element_schema(args[0], extra, depth)
        listed = [a for a in args if typing.get_origin(a) in (list, typing.List)]  # noqa: UP006
        return _element_schema(listed[0] if listed else args[0], extra, depth)
    if origin in (list, typing.List):  # noqa: UP006
        item = _element_schema(typing.get_args(annotation)[0], extra, depth)
        return {"type": "array", "items": item, "minItems": 1}
    if origin is typing.Annotated:
        _, *meta = typing.get_args(annotation)
        kind = type(meta[0]).__name__ if meta else ""
        enum = [v for v in extra.get("enum_values") or () if v != "+"]
        if enum:
            return {"type": "string", "enum": enum}
        return dict(_PRIMITIVES.get(kind, _STRING))
    if annotation is bool:
        return {"type": "boolean"}
    name = getattr(annotation, "__name__", "")
    if name.endswith("Type"):
        datatype = name[: -len("Type")]
        if datatype in _DATATYPES:
            return {"$ref": f"#/components/schemas/{datatype}"}
        if depth < 1 and datatype not in ("Resource", "FHIRPrimitiveExtension"):
            try:  # a backbone element (ObservationComponent, …): its own elements, once
                return _model_schema(datatype, depth + 1)
            except (KeyError, ValueError, AttributeError):
                pass
    return {"type": "object"}


@cache
def _model_schema(name: str, depth: int = 0) -> dict[str, Any]:
    model = get_fhir_model_class(name)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field_name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if field_name in _SKIPPED or field_name.endswith("__ext") or not extra.get(
            "element_property"
        ):
            continue
        if field_name in ("extension", "modifierExtension", "id") and depth > 0:
            continue
        key = field.alias or field_name
        properties[key] = _element_schema(field.annotation, extra, depth)
        if field.is_required() or extra.get("element_required"):
            required.append(key)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def resource_schema(name: str) -> dict[str, Any]:
    """The JSON schema of a resource body (``resourceType`` fixed, telemon's elements)."""
    schema = _model_schema(name)
    properties = {"resourceType": {"type": "string", "const": name}, **schema["properties"]}
    return {
        "type": "object",
        "properties": properties,
        "required": ["resourceType", *schema.get("required", [])],
        "description": f"A FHIR R4 {name} (https://hl7.org/fhir/R4/{name.lower()}.html)",
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
            "description": description}


_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": ID_PATTERN},
    "description": "The logical id",
}
_PREFER = _header("Prefer", "`return=minimal|representation|OperationOutcome`, `handling=strict`")
_COUNT = _query("_count", {"type": "integer", "minimum": 0}, "Page size (capped by the server)")


def _search_parameters(rtype: ResourceType, registry: Registry) -> list[dict[str, Any]]:
    params: list[SearchParam] = [*rtype.params.values(), *COMMON_PARAMS.values()]
    out = []
    for p in params:
        described = f"{p.description} ({p.type}: {_PARAM_SYNTAX.get(p.type, 'a value')})"
        out.append(_query(p.name, {"type": "string"}, described))
        if p.type in ("string", "uri"):
            out += [_query(f"{p.name}:{m}", {"type": "string"}, f"{p.description}, {m} match")
                    for m in ("exact", "contains")]
        elif p.type == "token":
            out.append(_query(f"{p.name}:not", {"type": "string"}, f"{p.description}: not this"))
    sorts = [*rtype.sort_params, "_lastUpdated", "_id"]
    out += [
        _COUNT,
        _query("_sort", {"type": "string", "enum": sorts + [f"-{s}" for s in sorts]}, "Order"),
        _query("_summary", {"type": "string", "enum": ["true", "text", "data", "count", "false"]},
               "Summary elements only (true), text only, all but the text (data), only the "
               "total (count)"),
        _query("_total", {"type": "string", "enum": ["accurate", "estimate", "none"]},
               "Include the total"),
        _query("_elements", {"type": "string"},
               "Comma-separated top-level elements to return (mandatory ones are kept)"),
    ]
    if rtype.includes:
        out.append(_query("_include", {"type": "string", "enum": list(rtype.includes)},
                          "Include the referenced resources"))
    out += _link_parameters(rtype, registry)
    return out


def _link_parameters(rtype: ResourceType, registry: Registry) -> list[dict[str, Any]]:
    """``_revinclude`` and the chains to an identifier (service/fhir/search.py)."""
    out = []
    revincludes = revinclude_names(rtype, registry)
    if revincludes:
        out.append(_query(
            "_revinclude", {"type": "string", "enum": revincludes},
            "Include the resources that point at the matches (capped: TELEMON_MAX_REVINCLUDE); "
            "the same Source:reference pairs work as _has:Source:reference:parameter",
        ))
    out += [
        _query(f"{name}:iterate", {"type": "string"},
               f"{name} (Source:reference) followed from the included resources too")
        for name in ("_include", "_revinclude")
    ]
    for p in rtype.params.values():
        target = registry.get(chain_target(rtype, p) or "") if p.type == "reference" else None
        if target is not None and "identifier" in target.params:
            out.append(_query(
                f"{p.name}.identifier", {"type": "string"},
                f"Chained: the {target.name} {p.name} points at has this identifier "
                "([system|]value); any other parameter of the target chains the same way",
            ))
    return out


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {FHIR_JSON: {"schema": schema}}}


_PATCH_BODY = {
    "required": True,
    "content": {
        "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
        FHIR_JSON: {"schema": {"$ref": "#/components/schemas/Parameters"}},
        "application/merge-patch+json": {"schema": {"type": "object"}},
    },
}


def _responses(*codes: str) -> dict[str, Any]:
    text = {
        "200": "OK (a resource, a Bundle or an OperationOutcome)",
        "201": "Created",
        "400": "Invalid request (an OperationOutcome naming the element)",
        "404": "Unknown type or resource",
        "410": "Deleted",
        "412": "Precondition failed (If-Match, If-None-Exist)",
        "422": "Not valid against telemon's profiles",
    }
    return {code: {"description": text[code]} for code in codes}


def _type_paths(rtype: ResourceType, registry: Registry) -> dict[str, Any]:
    name, ref = rtype.name, {"$ref": f"#/components/schemas/{rtype.name}"}
    tag = [name]
    writable = not rtype.read_only
    type_path: dict[str, Any] = {
        "get": {
            "tags": tag,
            "summary": f"Search {name}",
            "operationId": f"search{name}",
            "parameters": [*_search_parameters(rtype, registry), _PREFER],
            "responses": _responses("200", "400"),
        }
    }
    instance: dict[str, Any] = {
        "get": {"tags": tag, "summary": f"Read {name}", "operationId": f"read{name}",
                "parameters": [_ID_PARAM], "responses": _responses("200", "404", "410")},
    }
    paths: dict[str, Any] = {
        f"/fhir/{name}": type_path,
        f"/fhir/{name}/_search": {
            "post": {
                "tags": tag,
                "summary": f"Search {name} with the parameters in a form body",
                "operationId": f"searchPost{name}",
                "requestBody": {
                    "required": True,
                    "content": {FORM: {"schema": {
                        "type": "object",
                        "properties": {
                            p["name"]: p["schema"] for p in _search_parameters(rtype, registry)
                        },
                    }}},
                },
                "responses": _responses("200", "400"),
            }
        },
        f"/fhir/{name}/{{id}}": instance,
        f"/fhir/{name}/{{id}}/_history/{{vid}}": {
            "get": {
                "tags": tag,
                "summary": f"Read one version of a {name}",
                "operationId": f"vread{name}",
                "parameters": [_ID_PARAM, {"name": "vid", "in": "path", "required": True,
                                           "schema": {"type": "integer", "minimum": 1}}],
                "responses": _responses("200", "404", "410"),
            }
        },
    }
    if "history-type" in rtype.interactions:
        paths[f"/fhir/{name}/_history"] = {"get": {
            "tags": tag,
            "summary": f"History of every {name}",
            "operationId": f"typeHistory{name}",
            "parameters": [_query("_since", _DATE_TIME, "Only versions since"), _COUNT],
            "responses": _responses("200", "400"),
        }}
    if "history-instance" in rtype.interactions:
        paths[f"/fhir/{name}/{{id}}/_history"] = {"get": {
            "tags": tag,
            "summary": f"History of one {name}",
            "operationId": f"history{name}",
            "parameters": [_ID_PARAM, _query("_since", _DATE_TIME, "Only versions since"),
                           _COUNT],
            "responses": _responses("200", "400", "404"),
        }}
    if writable:
        type_path["post"] = {
            "tags": tag,
            "summary": f"Create a {name} (conditionally with If-None-Exist)",
            "operationId": f"create{name}",
            "parameters": [
                _header("If-None-Exist", "Conditional create: search criteria, e.g. "
                        "`identifier=system|value`"),
                _PREFER,
            ],
            "requestBody": _body(ref),
            "responses": _responses("200", "201", "400", "412", "422"),
        }
        instance["put"] = {
            "tags": tag,
            "summary": f"Update (or create with this id) a {name}",
            "operationId": f"update{name}",
            "parameters": [_ID_PARAM, _header("If-Match", 'The version, e.g. `W/"3"`'), _PREFER],
            "requestBody": _body(ref),
            "responses": _responses("200", "201", "400", "412", "422"),
        }
        instance["delete"] = {
            "tags": tag,
            "summary": f"Delete a {name}",
            "operationId": f"delete{name}",
            "parameters": [_ID_PARAM],
            "responses": _responses("200", "404"),
        }
        instance["patch"] = {
            "tags": tag,
            "summary": f"Patch a {name}: JSON Patch, FHIRPath Patch or merge patch",
            "operationId": f"patch{name}",
            "parameters": [_ID_PARAM, _header("If-Match", 'The version, e.g. `W/"3"`'), _PREFER],
            "requestBody": _PATCH_BODY,
            "responses": _responses("200", "400", "404", "410", "412", "422"),
        }
        criteria = [*_search_parameters(rtype, registry), _PREFER]
        if_match = _header("If-Match", 'The version of the match, e.g. `W/"3"`')
        type_path["put"] = {
            "tags": tag,
            "summary": f"Conditional update of a {name}: create (no match), update (one match) "
            "or 412 (several); the query is the search criteria",
            "operationId": f"conditionalUpdate{name}",
            "parameters": [*criteria, if_match],
            "requestBody": _body(ref),
            "responses": _responses("200", "201", "400", "412", "422"),
        }
        type_path["patch"] = {
            "tags": tag,
            "summary": f"Conditional patch of the one {name} the query matches",
            "operationId": f"conditionalPatch{name}",
            "parameters": [*criteria, if_match],
            "requestBody": _PATCH_BODY,
            "responses": _responses("200", "400", "404", "412", "422"),
        }
        type_path["delete"] = {
            "tags": tag,
            "summary": f"Conditional delete of the one {name} the query matches (none: 200)",
            "operationId": f"conditionalDelete{name}",
            "parameters": criteria,
            "responses": _responses("200", "400", "412"),
        }
    return paths


def _fhir_paths(registry: Registry) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/fhir/metadata": {"get": {
            "tags": ["FHIR"], "summary": "The CapabilityStatement", "operationId": "metadata",
            "parameters": [_query("_format", {"type": "string"}, "json only")],
            "responses": _responses("200"),
        }},
        "/fhir": {"post": {
            "tags": ["FHIR"],
            "summary": "A transaction (all or nothing) or batch Bundle",
            "operationId": "transaction",
            "parameters": [_PREFER],
            "requestBody": _body({"$ref": "#/components/schemas/Bundle"}),
            "responses": _responses("200", "400", "404", "412", "422"),
        }},
    }
    for rtype in registry:
        paths.update(_type_paths(rtype, registry))
    obs = registry.get("Observation")
    if obs is not None:
        paths["/fhir/Observation/$lastn"] = {"get": {
            "tags": ["Observation"],
            "summary": "The newest `max` Observations per patient and code",
            "operationId": "lastnObservation",
            "parameters": [
                _query("max", {"type": "integer", "minimum": 1}, "How many per code"),
                *[p for p in _search_parameters(obs, registry) if not p["name"].startswith("_")],
            ],
            "responses": _responses("200", "400"),
        }}
    for name in CONFORMANCE_TYPES:
        paths[f"/fhir/{name}"] = {"get": {
            "tags": ["Conformance"], "summary": f"The {name} resources telemon serves",
            "operationId": f"search{name}",
            "parameters": [_query("url", _URI, "Canonical URL")],
            "responses": _responses("200"),
        }}
        paths[f"/fhir/{name}/{{id}}"] = {"get": {
            "tags": ["Conformance"], "summary": f"Read a {name}", "operationId": f"read{name}",
            "parameters": [_ID_PARAM], "responses": _responses("200", "404"),
        }}
    return paths


def _form_op(op_id: str, summary: str, fields: dict[str, Any], tag: str) -> dict[str, Any]:
    return {"post": {
        "tags": [tag], "summary": summary, "operationId": op_id,
        "requestBody": {"required": True, "content": {FORM: {"schema": {
            "type": "object", "properties": fields}}}},
        "responses": {"200": {"description": "A page or a JSON answer"},
                      "302": {"description": "Redirect"},
                      "400": {"description": "Invalid request"}},
    }}


def _oauth_and_browser_paths() -> dict[str, Any]:
    text = {"type": "string"}
    authorize = [
        _query(name, text, description)
        for name, description in (
            ("response_type", "`code`"),
            ("client_id", "The PGO's registered client_id"),
            ("redirect_uri", "A registered redirect URI"),
            ("scope", "SMART v2 scopes, e.g. `launch/patient patient/Observation.rs`"),
            ("state", "Opaque value returned to the client"),
            ("aud", "This FHIR server's base URL"),
            ("code_challenge", "PKCE S256 challenge"),
            ("code_challenge_method", "`S256`"),
        )
    ]
    token_fields = {name: text for name in (
        "grant_type", "code", "redirect_uri", "code_verifier", "client_id", "client_secret",
        "client_assertion_type", "client_assertion", "scope", "refresh_token")}
    token_ref = {name: text for name in (
        "token", "token_type_hint", "client_id", "client_secret", "client_assertion_type",
        "client_assertion")}
    return {
        "/oauth/authorize": {"get": {
            "tags": ["OAuth"], "summary": "Start the PGO authorization (code + PKCE)",
            "operationId": "authorize", "parameters": authorize,
            "responses": {"200": {"description": "The login page"},
                          "302": {"description": "Back to the client with an error"},
                          "400": {"description": "Invalid request"}},
        }},
        "/oauth/token": {"post": {
            "tags": ["OAuth"], "summary": "The token endpoint", "operationId": "token",
            "requestBody": {"required": True, "content": {FORM: {"schema": {
                "type": "object", "properties": token_fields}}}},
            "responses": {"200": {"description": "An access token"},
                          "400": {"description": "RFC 6749 error"},
                          "401": {"description": "Client authentication failed"}},
        }},
        "/oauth/revoke": _form_op("revoke", "Revoke an access or refresh token (RFC 7009)",
                                  token_ref, "OAuth"),
        "/oauth/introspect": _form_op("introspect",
                                      "Introspect a token (RFC 7662; backend services)",
                                      token_ref, "OAuth"),
        "/oauth/consents": {"get": {
            "tags": ["Browser forms"], "summary": "The patient's consents (or the DigiD login)",
            "operationId": "patientConsents",
            "responses": {"200": {"description": "The page"}},
        }},
        "/oauth/consents/login": _form_op(
            "patientConsentsLogin", "The consent overview's (simulated DigiD) login",
            {"csrf_token": text, "bsn": text}, "Browser forms"),
        "/oauth/consents/withdraw": _form_op(
            "patientConsentsWithdraw", "Withdraw one of the patient's consents",
            {"csrf_token": text, "consent_id": text}, "Browser forms"),
        "/oauth/consents/change": _form_op(
            "patientConsentsChange", "Move the end of a long-term consent",
            {"csrf_token": text, "consent_id": text,
             "term": {"type": "string", "enum": ["until", "indefinite"]},
             "until": {"type": "string", "format": "date"}}, "Browser forms"),
        "/oauth/consents/logout": _form_op(
            "patientConsentsLogout", "Log out of the consent overview",
            {"csrf_token": text}, "Browser forms"),
        "/oauth/login": _form_op("patientLogin", "The patient's (simulated DigiD) login form",
                                 {"tx": text, "csrf_token": text, "bsn": text}, "Browser forms"),
        "/oauth/consent": _form_op("patientConsent", "The patient's consent form",
                                   {"tx": text, "csrf_token": text,
                                    "decision": {"type": "string", "enum": ["allow", "deny"]},
                                    "term": {"type": "string",
                                             "enum": ["once", "until", "indefinite"]},
                                    "until": {"type": "string", "format": "date"}},
                                   "Browser forms"),
        "/dashboard/login": _form_op("dashboardLogin", "The clinician's login form",
                                     {"csrf_token": text, "uzi": text, "next": text},
                                     "Browser forms"),
        "/dashboard/patients/{patient_id}": {"get": {
            "tags": ["Browser forms"], "summary": "A patient's page in the dashboard",
            "operationId": "dashboardPatient",
            "parameters": [
                {"name": "patient_id", "in": "path", "required": True, "schema": text},
                _query("days", {"type": "integer", "enum": [30, 90]}, "The charts' period"),
            ],
            "responses": {"200": {"description": "The page"},
                          "303": {"description": "To the login"}},
        }},
        **{
            f"/dashboard/alerts/{{flag_id}}/{action}": {**_form_op(
                f"dashboard{action.title()}", f"{action.title()} an alert",
                {"csrf_token": text, "version": {"type": "integer", "minimum": 1}, "next": text,
                 "note": {"type": "string", "maxLength": 500},
                 "scope": {"type": "string", "enum": ["group"]},
                 "group": {"type": "string", "description": "The patient's alerts: id:version,…"}},
                "Browser forms",
            )}
            for action in ("acknowledge", "resolve")
        },
    }


def _with_path_param(paths: dict[str, Any]) -> dict[str, Any]:
    """Declare ``flag_id`` on the dashboard's alert actions."""
    for action in ("acknowledge", "resolve"):
        op = paths[f"/dashboard/alerts/{{flag_id}}/{action}"]["post"]
        op["parameters"] = [{"name": "flag_id", "in": "path", "required": True,
                             "schema": {"type": "string", "pattern": ID_PATTERN}}]
    return paths


def _bundle_schema(registry: Registry) -> dict[str, Any]:
    resources = [{"$ref": f"#/components/schemas/{t.name}"} for t in registry if not t.read_only]
    resources.append({"$ref": "#/components/schemas/Parameters"})  # a PATCH entry's patch
    return {
        "type": "object",
        "required": ["resourceType", "type"],
        "properties": {
            "resourceType": {"type": "string", "const": "Bundle"},
            "type": {"type": "string", "enum": ["transaction", "batch"]},
            "entry": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "properties": {
                    "fullUrl": _URI,
                    "resource": {"oneOf": resources},
                    "request": {
                        "type": "object",
                        "required": ["method", "url"],
                        "properties": {
                            "method": {"type": "string",
                                       "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
                            "url": _STRING,
                            "ifNoneExist": _STRING,
                            "ifMatch": _STRING,
                        },
                    },
                },
            }},
        },
    }


def openapi_document(registry: Registry, generated: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service.

    ``generated`` is FastAPI's own document: its generic FHIR paths (``/fhir/{res_type}…``)
    are replaced by one set per resource type; any other route it describes stays.
    """
    schemas: dict[str, Any] = dict(generated.get("components", {}).get("schemas", {}))
    schemas.update({name: dict(schema) for name, schema in _DATATYPES.items()})
    for rtype in registry:
        schemas[rtype.name] = resource_schema(rtype.name)
    schemas["Bundle"] = _bundle_schema(registry)
    schemas["Parameters"] = resource_schema("Parameters")  # a FHIRPath Patch
    paths = {p: item for p, item in generated.get("paths", {}).items() if "{res_type}" not in p}
    paths.update(_fhir_paths(registry))
    paths.update(_with_path_param(_oauth_and_browser_paths()))
    for path in ("/health", "/ready"):
        paths[path] = {"get": {"tags": ["Operations"], "summary": f"{path[1:]} probe",
                               "operationId": path[1:],
                               "responses": {"200": {"description": "OK"}}}}
    return {**generated, "paths": paths, "components": {"schemas": schemas}}
