"""Base FHIR R4 structure validation (HTTP 400 territory).

Two passes over a parsed resource:

1. A walk driven by a per-model table (compiled once per fhir.resources class) that checks what
   the pydantic models let through: the JSON type of every primitive (``"80.5"`` is not a decimal,
   ``"true"`` not a boolean, ``3.0`` not an integer), codes of required bindings, the resource type
   of nested resources (the model crashes or silently accepts without one), dom-2/3/4 for
   ``contained`` and dangerous narrative.
2. ``model_validate`` of the fhir.resources R4B model, its errors mapped to FHIRPath expressions.

All issues are raised together in one :class:`FhirError` (400).

Building the model objects is the costliest part of a create. Whether a document passes the
model depends on two things only: its *shape* (which elements are present, their JSON types and
how often they repeat; the models' own rules — required elements, one choice of value[x], no
nulls in lists, no unknown elements — look at nothing else) and whether each primitive value is
valid for its field's type. So once a document of some shape has passed ``model_validate``,
another of the same shape passes it exactly when every primitive value passes its field's
pydantic validator, the very validator the model would run on it. The walk records the shape
and the primitive values; a known-good shape then only has its primitives checked, with the
same validators. Anything else — an unseen shape, a failing primitive, nested resources — goes
through ``model_validate`` itself, so every error still comes from the model, word for word.
"""

from __future__ import annotations

import html
import re
import threading
import types
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from service.core.outcome import FhirError, Issue

SUPPORTED_TYPES: frozenset[str] = frozenset(
    {
        "Patient",
        "Device",
        "Observation",
        "Flag",
        "CarePlan",
        "Goal",
        "Practitioner",
        "Subscription",
        "AuditEvent",
        "PlanDefinition",
        "Bundle",
    }
)

_MODELS: dict[str, type[FHIRAbstractModel]] = {t: get_fhir_model_class(t) for t in SUPPORTED_TYPES}

# Required bindings the generated models list incompletely (their ``enum_values`` end in "+") or
# not at all. Completes ``enum_values`` for the elements telemon relies on.
_EXTRA_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Observation", "status"): frozenset(
        {
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    ("Quantity", "comparator"): frozenset({"<", "<=", ">=", ">"}),
}

# Narrative (txt-1) may only hold basic formatting; these elements carry active content or forms.
_FORBIDDEN_TAGS = re.compile(
    r"<\s*/?\s*(script|iframe|frame|frameset|form|input|button|select|textarea|object|embed|"
    r"applet|base|link|meta|style)\b",
    re.IGNORECASE,
)
_EVENT_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)
_BAD_SCHEMES = ("javascript:", "vbscript:")
_WHITESPACE = re.compile(r"[\s\x00-\x1f]+")


class _Kind(Enum):
    STRING = "a JSON string"
    INTEGER = "a JSON integer"
    DECIMAL = "a JSON number"
    BOOLEAN = "a JSON boolean (true/false)"
    COMPLEX = "a JSON object"
    RESOURCE = "a FHIR resource (JSON object with resourceType)"
    ANY = "any value"


_PRIMITIVE_KINDS = {
    "boolean": _Kind.BOOLEAN,
    "integer": _Kind.INTEGER,
    "unsignedInt": _Kind.INTEGER,
    "positiveInt": _Kind.INTEGER,
    "decimal": _Kind.DECIMAL,
}


@dataclass(frozen=True, slots=True)
class _Field:
    kind: _Kind
    many: bool
    child: type[FHIRAbstractModel] | None
    codes: frozenset[str] | None
    #: The model's own validator for the whole value of a primitive field (None otherwise).
    primitive: TypeAdapter[Any] | None


_FIELD_TABLES: dict[type[FHIRAbstractModel], dict[str, _Field]] = {}

#: Shapes (see the module docstring) of documents that passed ``model_validate``, oldest first.
_VALID_SHAPES: dict[tuple[Any, ...], None] = {}
_MAX_SHAPES = 4096
_END = object()  # closes an object's elements in a shape
_shapes_lock = threading.Lock()


def validate_structure(data: Any, expected_type: str | None = None) -> str:
    """Validate ``data`` as a FHIR R4 resource of a supported type and return its type name.

    Raises :class:`FhirError` (400) with one issue per problem, each naming the element as a
    FHIRPath expression (``Observation.component[1].valueQuantity.value``).
    """
    if type(data) is not dict:
        raise FhirError.structure("The body must be a JSON object (a FHIR resource)")
    resource_type = data.get("resourceType")
    if type(resource_type) is not str:
        raise FhirError.structure("resourceType is missing or not a string", "resourceType")
    if resource_type not in SUPPORTED_TYPES:
        raise FhirError.unsupported(
            f"Resource type '{resource_type}' is not supported",
            "resourceType",
        )
    if expected_type is not None and resource_type != expected_type:
        raise FhirError.invalid(
            f"resourceType '{resource_type}' does not match the expected type '{expected_type}'",
            "resourceType",
        )
    model = _MODELS[resource_type]
    walker = _Walker(resource_type)
    walker.resource(data, model)
    if walker.blocking:
        # A nested resource without a usable resourceType crashes or fools the model: stop here.
        raise FhirError.malformed(walker.issues)
    shape = tuple(walker.shape) if walker.shape is not None else None
    if (
        shape is not None
        and not walker.issues
        and shape in _VALID_SHAPES
        and walker.primitives_pass()
    ):
        return resource_type  # the model would accept it: see the module docstring
    try:
        model.model_validate(data)
    except ValidationError as exc:
        seen = {e for issue in walker.issues for e in issue.expression}
        for error in exc.errors():
            issue = _map_error(resource_type, error)
            if issue.expression[0] not in seen:
                seen.add(issue.expression[0])
                walker.issues.append(issue)
    if walker.issues:
        raise FhirError.malformed(walker.issues)
    if shape is not None:
        _remember(shape)
    return resource_type


def _remember(shape: tuple[Any, ...]) -> None:
    with _shapes_lock:
        if len(_VALID_SHAPES) >= _MAX_SHAPES:
            del _VALID_SHAPES[next(iter(_VALID_SHAPES))]
        _VALID_SHAPES[shape] = None


class _Walker:
    """One pass over the JSON collecting issues; ``path`` holds ``.name``/``[i]`` segments."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.path: list[str] = []
        self.issues: list[Issue] = []
        self.blocking = False
        self.references: list[str] = []
        #: Element names, JSON types and list lengths in document order; None once the
        #: document holds something the shape cannot stand for (nested resources, unknown keys).
        self.shape: list[Any] | None = [root]
        self.primitives: list[tuple[TypeAdapter[Any], Any]] = []

    def primitives_pass(self) -> bool:
        """True when every primitive value passes its field's validator in the model."""
        try:
            for adapter, value in self.primitives:
                adapter.validate_python(value)
        except ValidationError:
            return False
        return True

    def where(self, *extra: str) -> str:
        return self.root + "".join(self.path) + "".join(extra)

    def fail(self, code: str, diagnostics: str, *extra: str) -> None:
        self.issues.append(Issue(code, diagnostics, (self.where(*extra),)))

    def resource(self, node: dict[str, Any], model: type[FHIRAbstractModel]) -> None:
        """Check one resource (the root, a contained one or a Bundle entry's)."""
        refs_before = len(self.references)
        self.element(node, model)
        text = node.get("text")
        if type(text) is dict and type(text.get("div")) is str:
            self.narrative(text["div"])
        contained = node.get("contained")
        if type(contained) is list:
            scope = set(self.references[refs_before:])
            for index, inner in enumerate(contained):
                if type(inner) is dict:
                    self.path.append(f".contained[{index}]")
                    self.contained_rules(inner, scope)
                    self.path.pop()

    def element(self, node: dict[str, Any], model: type[FHIRAbstractModel]) -> None:
        table = _fields(model)
        is_reference = model.__name__ == "Reference"
        for key, value in node.items():
            spec = table.get(key)
            if spec is None:  # unknown elements and resourceType: reported by/left to the model
                if not (key == "resourceType" and not self.path):
                    self.shape = None
                continue
            shape = self.shape  # read per element: a nested one may have given up the shape
            if shape is not None:
                shape.append(key)
                if spec.primitive is not None:
                    self.primitives.append((spec.primitive, value))
                elif spec.kind is not _Kind.COMPLEX:
                    self.shape = shape = None
            if spec.many:
                if type(value) is list:
                    if shape is not None:
                        shape.append(len(value))
                    for index, item in enumerate(value):
                        if item is not None:  # null placeholders were vetted by parse_json
                            self.value(item, spec, key, index)
                        elif self.shape is not None:
                            self.shape.append(None)
                else:
                    self.fail("structure", "Must be a JSON array", f".{key}")
            elif type(value) is list:
                message = "Must not be an array (the element repeats at most once)"
                self.fail("structure", message, f".{key}")
            else:
                self.value(value, spec, key, -1)
                if is_reference and key == "reference" and type(value) is str:
                    self.references.append(value)

    def value(self, value: Any, spec: _Field, key: str, index: int) -> None:
        """Check one occurrence; ``index`` is -1 for a non-repeating element."""
        # The path segment is only built when needed: most values are fine primitives.
        kind = spec.kind
        if self.shape is not None:
            self.shape.append(type(value))
        if kind is _Kind.STRING:
            ok = type(value) is str
            if ok and spec.codes is not None and value not in spec.codes:
                allowed = ", ".join(sorted(spec.codes))
                self.fail("value", f"Unknown code '{value}'; allowed: {allowed}", _step(key, index))
        elif kind is _Kind.INTEGER:
            ok = type(value) is int
        elif kind is _Kind.DECIMAL:
            ok = type(value) is int or isinstance(value, float)  # incl. WrittenDecimal
        elif kind is _Kind.BOOLEAN:
            ok = type(value) is bool
        elif kind is _Kind.COMPLEX or kind is _Kind.RESOURCE:
            ok = type(value) is dict
            if ok:
                self.path.append(_step(key, index))
                if spec.child is not None:  # COMPLEX; a RESOURCE finds its model by resourceType
                    self.element(value, spec.child)
                else:
                    self.nested_resource(value)
                self.path.pop()
                if self.shape is not None:
                    self.shape.append(_END)
        else:
            ok = True
        if not ok:
            self.fail(
                "structure", f"Must be {kind.value}, not {_json_type(value)}", _step(key, index)
            )

    def nested_resource(self, node: dict[str, Any]) -> None:
        name = node.get("resourceType")
        model = _resource_model(name) if type(name) is str else None
        if model is None:
            self.blocking = True
            self.fail("structure", f"Not a known FHIR resource type: {name!r}", ".resourceType")
            return
        self.resource(node, model)

    def contained_rules(self, inner: dict[str, Any], scope: set[str]) -> None:
        if "contained" in inner:
            self.fail("invariant", "A contained resource must not contain resources (dom-2)")
        meta = inner.get("meta")
        if type(meta) is dict:
            for key in ("versionId", "lastUpdated"):
                if key in meta:
                    self.fail(
                        "invariant",
                        f"A contained resource must not have meta.{key} (dom-4)",
                        f".meta.{key}",
                    )
        ident = inner.get("id")
        # Approximation of dom-3: "#" anywhere in the container counts as the contained resource
        # referring back to its container.
        if f"#{ident}" not in scope and "#" not in scope:
            self.fail(
                "invariant",
                "A contained resource must be referenced from the containing resource (dom-3)",
            )

    def narrative(self, div: str) -> None:
        problem = None
        if not div.lstrip().startswith("<div"):
            problem = "must be an XHTML <div> element"
        elif _FORBIDDEN_TAGS.search(div):
            problem = "must not contain scripts, frames, forms or embedded objects"
        elif _EVENT_HANDLER.search(div):
            problem = "must not contain event handler attributes (on...=)"
        else:
            flat = _WHITESPACE.sub("", html.unescape(div)).lower()
            if any(scheme in flat for scheme in _BAD_SCHEMES):
                problem = "must not contain javascript: or vbscript: URLs"
        if problem:
            self.fail("invariant", f"Narrative {problem} (txt-1)", ".text.div")


def _step(key: str, index: int) -> str:
    return f".{key}" if index < 0 else f".{key}[{index}]"


def _fields(model: type[FHIRAbstractModel]) -> dict[str, _Field]:
    """The JSON key → field table of a model class, compiled on first use."""
    table = _FIELD_TABLES.get(model)
    if table is None:
        table = {}
        for name, info in model.model_fields.items():
            kind, many, child = _resolve(info.annotation)
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            enum = extra.get("enum_values")
            codes = _EXTRA_CODES.get((model.__name__, name))
            if codes is None and isinstance(enum, list) and "+" not in enum and "etc." not in enum:
                codes = frozenset(str(code) for code in enum)
            primitive = None
            if (
                kind not in (_Kind.COMPLEX, _Kind.RESOURCE, _Kind.ANY)
                and info.annotation is not None
                and not info.metadata
            ):
                primitive = TypeAdapter(info.annotation)
            table[info.alias or name] = _Field(kind, many, child, codes, primitive)
        _FIELD_TABLES[model] = table
    return table


def _resolve(annotation: Any) -> tuple[_Kind, bool, type[FHIRAbstractModel] | None]:
    """Kind, repetition and child model of a fhir.resources field annotation."""
    many = False
    tp = annotation
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Union or origin is types.UnionType:
            tp = next(arg for arg in typing.get_args(tp) if arg is not type(None))
        elif origin is list:
            many = True
            tp = typing.get_args(tp)[0]
        elif origin is typing.Annotated:
            visit = getattr(tp.__metadata__[0], "__visit_name__", "string")
            return _PRIMITIVE_KINDS.get(visit, _Kind.STRING), many, None
        else:
            break
    if isinstance(tp, type) and issubclass(tp, FhirBase):
        child = tp.get_model_klass()
        if child.__name__ == "Resource":
            return _Kind.RESOURCE, many, None
        return _Kind.COMPLEX, many, child
    if tp is bool:  # booleans are plain ``bool`` in the models, not ``Annotated``
        return _Kind.BOOLEAN, many, None
    if tp is str:
        return _Kind.STRING, many, None
    return _Kind.ANY, many, None


def _resource_model(name: str) -> type[FHIRAbstractModel] | None:
    try:
        model = get_fhir_model_class(name)
    except ValueError:
        return None
    return model if model.has_resource_base() else None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else "null"


_FORMAT_NAMES = {
    "DateTime": "dateTime",
    "Date": "date",
    "Instant": "instant",
    "Time": "time",
    "Decimal": "decimal",
    "Id": "id",
    "Uri": "uri",
    "Url": "url",
    "Code": "code",
}


def _map_error(resource_type: str, error: ErrorDetails) -> Issue:
    """A pydantic error as an :class:`Issue` with a FHIRPath expression and a plain message."""
    path = resource_type
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "resource_type":
            path += ".resourceType"
        elif part != "root":
            path += f".{part}"
    kind = error["type"]
    value = error.get("input")
    message = error["msg"].removeprefix("Value error, ")
    if kind.startswith(("date", "time")) and isinstance(value, str):  # pydantic's calendar checks
        return Issue("value", f"'{value}' is not a valid date/time: {message}", (path,))
    if kind == "extra_forbidden":
        return Issue("structure", f"Unknown element '{path.rsplit('.', 1)[-1]}'", (path,))
    if kind in ("missing", "model_field_validation.missing"):
        name = path.rsplit(".", 1)[-1]
        return Issue("structure", f"Required element '{name}' is missing", (path,))
    if "one field value is expected" in message and isinstance(value, dict):
        # "Any of one field value is expected from this list [...], but got multiple!"
        choices = re.findall(r"'(\w+)'", message)
        present = [c for c in choices if c in value]
        stem = re.sub(r"[A-Z].*$", "", present[0]) if present else "value"
        return Issue(
            "structure",
            f"Only one {stem}[x] element is allowed, found: {', '.join(present)}",
            tuple(f"{path}.{c}" for c in present) or (path,),
        )
    fmt = re.match(r"(\w+) value string does not match spec regex", message)
    if fmt:
        name = _FORMAT_NAMES.get(fmt.group(1), fmt.group(1))
        if name in ("dateTime", "instant") and isinstance(value, str) and _lacks_offset(value):
            text = f"'{value}' has a time but no timezone offset; FHIR requires one (Z or +01:00)"
        else:
            text = f"{value!r} is not a valid FHIR {name}"
        return Issue("value", text, (path,))
    return Issue("structure", message, (path,))


def _lacks_offset(value: str) -> bool:
    time = value.partition("T")[2]
    return bool(time) and not (time.endswith("Z") or re.search(r"[+-]\d{2}:\d{2}$", time))


def resource_model(name: str) -> type[FHIRAbstractModel] | None:
    """The fhir.resources model of resource type ``name`` (None: not a resource type)."""
    return _MODELS.get(name) or _resource_model(name)


def element_of(
    model: type[FHIRAbstractModel], name: str
) -> tuple[bool, type[FHIRAbstractModel] | None] | None:
    """Whether element ``name`` of ``model`` repeats, and its model if complex (None: unknown)."""
    spec = _fields(model).get(name)
    return None if spec is None else (spec.many, spec.child)
