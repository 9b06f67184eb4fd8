"""The dashboard's HTML: Jinja2 templates (autoescaped) and the charts of a patient page.

Templates and the stylesheet are package data (``templates/``, ``static/``); nothing is
fetched from elsewhere at run time. Pages carry no scripts at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from functools import cache
from typing import Any

from jinja2 import (
    Environment,
    PackageLoader,
    StrictUndefined,
    pass_context,
    select_autoescape,
)
from jinja2.runtime import Context

from service.alerts.rules import default_rule_set
from service.core.concepts import BY_KEY, CHARTS
from service.core.messages import (
    DEFAULT_LANGUAGE,
    concept_name,
    has_message,
    limit_text,
    message,
    month_name,
    rule_title,
)
from service.dashboard.charts import Chart, Line, Marker, Point, Series, render
from service.dashboard.overview import Overview
from service.dashboard.worklist import duration

#: The periods a patient page offers, in days.
PERIODS = (30, 90)
#: The smallest value range per chart: a weight axis spans at least ±2 kg around the data.
MIN_SPAN = {"weight": 4.0}
#: After how long without a measurement of a kind the patient is late with it: the CAT is
#: weekly, the vital signs are daily (two days: one forgotten morning is no alarm).
STALE_AFTER = {"cat": timedelta(days=8)}


def is_stale(chart_key: str, last: datetime, now: datetime) -> bool:
    """Whether the last measurement of a chart's kind is overdue."""
    return now - last > STALE_AFTER.get(chart_key, timedelta(days=2))


def _rule_concepts(rule_id: str) -> frozenset[str]:
    try:
        return frozenset(default_rule_set().get(rule_id).concepts)
    except KeyError:
        return frozenset()


def chart_title(key: str, default: str, language: str) -> str:
    """A chart's title from the catalogue (the concept table's English title otherwise)."""
    return message(f"chart.{key}", language) if has_message(f"chart.{key}") else default


def fired_lines(overview: Overview, concepts: tuple[str, ...], language: str) -> list[Line]:
    """The limits the patient's alerts fired on (a Goal's value, a baseline-derived band):
    drawn on the chart of their measurement, so that the chart never contradicts an alert."""
    lines: dict[float, Line] = {}
    for alert in overview.alerts:
        limit = alert.limit
        if limit is None or limit.concept not in concepts or limit.value in lines:
            continue
        shown = limit_text(limit.op, limit.value, limit.unit, language, personal=limit.personal)
        label = f"{alert.rule_title}: {shown}"
        lines[limit.value] = Line(
            limit.value, alert.level, label, limit.personal, fired=True, since=limit.since
        )
    return list(lines.values())


def patient_charts(
    overview: Overview, zone: tzinfo, language: str = DEFAULT_LANGUAGE
) -> list[Chart]:
    """The charts of a patient page (the concept table's): series, lines and alert markers."""
    charts = []
    for spec in CHARTS:
        series = tuple(
            Series(
                concept,
                concept_name(concept, language, BY_KEY[concept].label),
                tuple(
                    Point(m.effective, m.value, m.observation_id)
                    for m in overview.measurements
                    if m.concept == concept
                ),
            )
            for concept in spec.concepts
        )
        refs = {p.ref for s in series for p in s.points}
        markers = []
        for alert in overview.alerts:
            evidence = refs.intersection(alert.evidence)
            if evidence or _rule_concepts(alert.rule_id).intersection(spec.concepts):
                state = message("ui.state_open" if alert.is_open else "ui.state_resolved", language)
                markers.append(
                    Marker(
                        alert.start,
                        alert.level,
                        f"{alert.rule_id} ({state}): {alert.headline}",
                        alert.is_open,
                        frozenset(evidence),
                    )
                )
        if not spec.always and not refs and not markers:
            continue
        fired = fired_lines(overview, spec.concepts, language)
        drawn = {ln.value for ln in fired}
        lines = tuple(fired) + tuple(
            Line(ln.value, ln.level, ln.label, ln.personal)
            for ln in overview.lines
            if ln.concept in spec.concepts and ln.value not in drawn
        )
        charts.append(
            Chart(
                key=spec.key,
                title=chart_title(spec.key, spec.title, language),
                unit=BY_KEY[spec.concepts[0]].shown_unit,
                start=overview.since,
                end=overview.until,
                series=series,
                lines=lines,
                markers=tuple(markers),
                zone=zone,
                min_span=MIN_SPAN.get(spec.key, 0.0),
                language=language,
                empty_text=message(
                    "ui.no_measurements_cat" if spec.key == "cat" else "ui.no_measurements",
                    language,
                ),
            )
        )
    return charts


@dataclass(frozen=True, slots=True)
class TableRow:
    """One moment of a chart's data table: the time and a value per series."""

    when: str
    values: tuple[str, ...]
    alert: bool  # evidence of an alert


def table_rows(chart: Chart) -> list[TableRow]:
    """The chart's values as table rows, newest first (the charts' text alternative)."""
    evidence = {ref for m in chart.markers for ref in m.refs}
    moments: dict[datetime, dict[int, str]] = {}
    flagged: set[datetime] = set()
    for index, series in enumerate(chart.series):
        for p in series.points:
            moments.setdefault(p.at, {})[index] = f"{p.value:g}"
            if p.ref in evidence:
                flagged.add(p.at)
    return [
        TableRow(
            local_time(at, chart.zone, chart.language),
            tuple(values.get(i, "") for i in range(len(chart.series))),
            at in flagged,
        )
        for at, values in sorted(moments.items(), reverse=True)
    ]


def local_time(at: datetime, zone: tzinfo, language: str = "en") -> str:
    """``23 Nov 2026 08:05`` in the service's time zone (``23 nov`` in Dutch)."""
    local = at.astimezone(zone)
    return f"{local.day} {month_name(local.month, language)} {local.year} {local:%H:%M}"


@pass_context
def _t(context: Context, key: str, **values: object) -> str:
    """The catalogue's text ``key`` in the page's language (``lang``)."""
    return message(key, context.get("lang", DEFAULT_LANGUAGE), **values)


def birth_date(text: str | None, language: str) -> str:
    """A FHIR date as the language writes it: ``12-03-1948`` in Dutch, ISO in English."""
    if not text or language == "en" or len(text) != 10:
        return text or ""
    return f"{text[8:10]}-{text[5:7]}-{text[0:4]}"


@cache
def environment() -> Environment:
    """The template environment: autoescaping on for everything, unknown names are errors."""
    env = Environment(
        loader=PackageLoader("service.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["svg"] = render
    env.globals["table_rows"] = table_rows
    env.globals["duration"] = duration
    env.globals["local_time"] = local_time
    env.globals["t"] = _t
    env.globals["birth_date"] = birth_date
    env.globals["is_stale"] = is_stale
    env.globals["rule_title"] = rule_title
    return env


def page(template: str, **context: Any) -> str:
    """Render one page template (in ``lang``, Dutch unless given)."""
    context.setdefault("lang", DEFAULT_LANGUAGE)
    return environment().get_template(template).render(**context)
