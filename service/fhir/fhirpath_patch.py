"""FHIRPath Patch (FHIR R4 fhirpatch.html): a ``Parameters`` resource of ``operation``\\ s.

Operations ``add``, ``insert``, ``delete``, ``replace`` and ``move`` with paths in the FHIRPath
subset that patches use in practice: element names (``Flag.status``, ``Observation.note``),
indexes (``Patient.name[0].given``), ``first()``, ``last()``, ``where(...)`` with ``=``/``!=``
comparisons joined by ``and`` (``Flag.extension.where(url='...')``) and ``extension('url')``.
Whether an element repeats comes from the fhir.resources models, so ``add`` appends to lists and
sets single elements. A path outside this subset is refused (400), never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fhir_core.fhirabstractmodel import FHIRAbstractModel

from service.core.outcome import FhirError
from service.validation.structure import element_of, resource_model

Model = type[FHIRAbstractModel] | None

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)|(?P<op>!=|[.()\[\]=,]))"
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "n": "\n", "r": "\r", "t": "\t"}


# -- parsing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Name:
    name: str


@dataclass(frozen=True, slots=True)
class _Index:
    index: int


@dataclass(frozen=True, slots=True)
class _Where:
    #: (relative path, ``=`` or ``!=``, literal), all of which must hold
    conditions: tuple[tuple[tuple[str, ...], str, Any], ...]


@dataclass(frozen=True, slots=True)
class _Ends:
    last: bool  # first() or last()


_Step = _Name | _Index | _Where | _Ends


def _tokens(text: str, where: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise _unsupported(text, where)
        kind = match.lastgroup or ""
        raw = match.group(kind)
        if kind == "string":
            value: Any = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), raw[1:-1])
        elif kind == "number":
            value = float(raw) if "." in raw else int(raw)
        elif kind == "ident":
            value = raw.strip("`")
        else:
            value = raw
        out.append((kind, value))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        self.tokens = _tokens(text, where)
        self.pos = 0

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", None)

    def take(self, kind: str, value: Any = None) -> Any:
        got = self.peek()
        if got[0] != kind or (value is not None and got[1] != value):
            raise _unsupported(self.text, self.where)
        self.pos += 1
        return got[1]

    def path(self) -> tuple[str, list[_Step]]:
        root = self.take("ident")
        steps: list[_Step] = []
        while self.peek()[0] != "end":
            if self.peek() == ("op", "["):
                self.take("op", "[")
                index = self.take("number")
                if not isinstance(index, int):
                    raise _unsupported(self.text, self.where)
                steps.append(_Index(index))
                self.take("op", "]")
                continue
            self.take("op", ".")
            name = self.take("ident")
            if self.peek() != ("op", "("):
                steps.append(_Name(name))
                continue
            self.take("op", "(")
            steps.extend(self.function(name))
            self.take("op", ")")
        return root, steps

    def function(self, name: str) -> list[_Step]:
        if name in ("first", "last"):
            return [_Ends(name == "last")]
        if name == "extension":
            url = self.take("string")
            return [_Name("extension"), _Where(((("url",), "=", url),))]
        if name != "where":
            raise _unsupported(self.text, self.where)
        conditions = [self.condition()]
        while self.peek() == ("ident", "and"):
            self.take("ident", "and")
            conditions.append(self.condition())
        return [_Where(tuple(conditions))]

    def condition(self) -> tuple[tuple[str, ...], str, Any]:
        names = [self.take("ident")]
        while self.peek() == ("op", "."):
            self.take("op", ".")
            names.append(self.take("ident"))
        op = self.take("op")
        if op not in ("=", "!="):
            raise _unsupported(self.text, self.where)
        kind, value = self.peek()
        if kind == "ident" and value in ("true", "false"):
            self.pos += 1
            return tuple(names), op, value == "true"
        if kind not in ("string", "number"):
            raise _unsupported(self.text, self.where)
        self.pos += 1
        return tuple(names), op, value


def _unsupported(text: str, where: str) -> FhirError:
    return FhirError.unsupported(
        f"Cannot read the path '{text}': FHIRPath Patch paths here are element names, [index], "
        "first(), last(), where(a.b = 'literal' and ...) and extension('url')",
        where,
    )


# -- evaluation ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Loc:
    """Where one element of a collection lives: ``holder[key]``."""

    holder: Any  # dict, or list for an element of a repeating element
    key: Any
    model: Model
    owner: tuple[dict[str, Any], str] | None = None  # the object and name holding the list

    @property
    def value(self) -> Any:
        return self.holder[self.key]


def _child(model: Model, name: str) -> Model:
    info = element_of(model, name) if model is not None else None
    return info[1] if info is not None else None


def _values(node: Any, names: tuple[str, ...]) -> list[Any]:
    current = [node]
    for name in names:
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, dict) and name in item:
                got = item[name]
                nxt.extend(got if isinstance(got, list) else [got])
        current = nxt
    return current


def _holds(node: Any, conditions: tuple[tuple[tuple[str, ...], str, Any], ...]) -> bool:
    for names, op, literal in conditions:
        values = _values(node, names)
        if op == "=" and literal not in values:
            return False
        if op == "!=" and (not values or literal in values):
            return False
    return True


def _evaluate(doc: dict[str, Any], root: str, steps: list[_Step], where: str) -> list[_Loc]:
    if root != doc.get("resourceType"):
        raise FhirError.unprocessable(
            f"The path starts at {root}, not at {doc.get('resourceType')}", where
        )
    locs = [_Loc({"": doc}, "", resource_model(root))]
    for step in steps:
        if isinstance(step, _Name):
            nxt: list[_Loc] = []
            for loc in locs:
                node = loc.value
                if not isinstance(node, dict) or step.name not in node:
                    continue
                model = _child(loc.model, step.name)
                got = node[step.name]
                if isinstance(got, list):
                    owner = (node, step.name)
                    nxt.extend(_Loc(got, i, model, owner) for i in range(len(got)))
                else:
                    nxt.append(_Loc(node, step.name, model))
            locs = nxt
        elif isinstance(step, _Index):
            locs = locs[step.index : step.index + 1] if step.index >= 0 else []
        elif isinstance(step, _Ends):
            locs = locs[-1:] if step.last else locs[:1]
        else:
            locs = [loc for loc in locs if _holds(loc.value, step.conditions)]
    return locs


# -- the operations -------------------------------------------------------------------------------


def apply(doc: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """Apply every ``operation`` of a FHIRPath Patch ``Parameters`` to ``doc`` (in place)."""
    params = parameters.get("parameter")
    if not isinstance(params, list) or not params:
        raise FhirError.required(
            "A FHIRPath Patch needs at least one operation", "Parameters.parameter"
        )
    for index, param in enumerate(params):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(param, dict) or param.get("name") != "operation":
            raise FhirError.invalid("Each parameter of a FHIRPath Patch is an 'operation'", where)
        _operation(doc, _parts(param, where), where)
    return doc


def _parts(param: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    parts: dict[str, dict[str, Any]] = {}
    for part in param.get("part") or []:
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str) or name in parts:
            raise FhirError.invalid("Each part of an operation is named once", where)
        parts[name] = part
    return parts


def _primitive(parts: dict[str, dict[str, Any]], name: str, kind: str, where: str) -> Any:
    part = parts.get(name)
    value = part.get(f"value{kind}") if part is not None else None
    python_type = int if kind == "Integer" else str
    if not isinstance(value, python_type) or isinstance(value, bool):
        raise FhirError.required(f"This operation needs the part '{name}' (value{kind})", where)
    return value


def _value(part: dict[str, Any] | None, model: Model, where: str) -> Any:
    """The value of a ``value`` part: its ``value[x]``, or an object built from its parts."""
    if part is None:
        raise FhirError.required("This operation needs a 'value' part", where)
    values = [v for k, v in part.items() if k.startswith("value")]
    if len(values) == 1 and "part" not in part:
        return values[0]
    if values or not isinstance(part.get("part"), list):
        raise FhirError.invalid("A value is one value[x] or a list of parts", f"{where}.part")
    out: dict[str, Any] = {}
    for sub in part["part"]:
        name = sub.get("name") if isinstance(sub, dict) else None
        if not isinstance(name, str):
            raise FhirError.invalid("Each part of a value has a name", where)
        info = element_of(model, name) if model is not None else None
        value = _value(sub, info[1] if info else None, where)
        if info is not None and info[0]:
            out.setdefault(name, []).append(value)
        elif name in out:
            raise FhirError.invalid(f"'{name}' does not repeat", where)
        else:
            out[name] = value
    return out


def _single(locs: list[_Loc], path: str, where: str) -> _Loc:
    if len(locs) != 1:
        raise FhirError.unprocessable(
            f"The path '{path}' must select exactly one element; it selects {len(locs)}",
            where,
        )
    return locs[0]


def _list(doc: dict[str, Any], root: str, steps: list[_Step], path: str, where: str) -> tuple[
    dict[str, Any], str, list[Any]
]:
    """The object, name and list a path to a repeating element names (insert, move)."""
    if not steps or not isinstance(steps[-1], _Name):
        raise FhirError.invalid(f"'{path}' must end in the name of a repeating element", where)
    name = steps[-1].name
    holder = _single(_evaluate(doc, root, steps[:-1], where), path, where)
    node = holder.value
    info = element_of(holder.model, name) if holder.model is not None else None
    current = node.get(name, []) if isinstance(node, dict) else None
    if not isinstance(current, list) or (info is not None and not info[0]):
        raise FhirError.unprocessable(f"'{path}' is not a repeating element", where)
    return node, name, current


def _position(parts: dict[str, dict[str, Any]], name: str, size: int, where: str) -> int:
    index = _primitive(parts, name, "Integer", where)
    if not 0 <= index <= size:
        raise FhirError.unprocessable(f"{name} {index} is outside the list (0..{size})", where)
    return int(index)


def _operation(doc: dict[str, Any], parts: dict[str, dict[str, Any]], where: str) -> None:
    kind = _primitive(parts, "type", "Code", where)
    path = _primitive(parts, "path", "String", where)
    root, steps = _Parser(path, f"{where}.part[path]").path()
    if kind == "add":
        name = _primitive(parts, "name", "String", where)
        target = _single(_evaluate(doc, root, steps, where), path, where)
        node = target.value
        if not isinstance(node, dict):
            raise FhirError.unprocessable(f"Cannot add to '{path}'", where)
        info = element_of(target.model, name) if target.model is not None else None
        value = _value(parts.get("value"), info[1] if info else None, where)
        existing = node.get(name)
        if (info is not None and info[0]) or isinstance(existing, list):
            node.setdefault(name, []).append(value)
        elif existing is not None:
            raise FhirError.unprocessable(f"{path}.{name} already has a value: use replace", where)
        else:
            node[name] = value
    elif kind == "insert":
        node, name, items = _list(doc, root, steps, path, where)
        index = _position(parts, "index", len(items), where)
        items.insert(index, _value(parts.get("value"), _list_model(root, steps), where))
        node[name] = items
    elif kind == "move":
        node, name, items = _list(doc, root, steps, path, where)
        source = _position(parts, "source", len(items) - 1, where)
        destination = _position(parts, "destination", len(items) - 1, where)
        items.insert(destination, items.pop(source))
    elif kind == "replace":
        target = _single(_evaluate(doc, root, steps, where), path, where)
        if not steps:
            raise FhirError.unprocessable("Cannot replace the resource", where)
        target.holder[target.key] = _value(parts.get("value"), target.model, where)
    elif kind == "delete":
        locs = _evaluate(doc, root, steps, where)
        if not locs:
            return  # deleting what is not there is no error
        target = _single(locs, path, where)
        if not steps:
            raise FhirError.unprocessable("Cannot delete the resource", where)
        if target.owner is None:
            del target.holder[target.key]
        else:
            target.holder.pop(target.key)
            owner, name = target.owner
            if not target.holder:
                del owner[name]  # FHIR has no empty arrays
    else:
        raise FhirError.unsupported(
            f"Unknown operation type '{kind}' (add, insert, delete, replace, move)",
            where,
        )


def _list_model(root: str, steps: list[_Step]) -> Model:
    model = resource_model(root)
    for step in steps:
        if isinstance(step, _Name):
            model = _child(model, step.name)
    return model
