"""The dashboard's HTML: Jinja2 templates (autoescaped) and the charts of a patient page.

Templates and the stylesheet are package data (``templates/``, ``static/``); nothing is
fetched from elsewhere at run time. Pages carry no scripts at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from service.alerts.rules import default_rule_set
from service.concepts import BY_KEY, CHARTS
from service.dashboard.charts import Chart, Line, Marker, Point, Series, render
from service.dashboard.overview import Overview
from service.dashboard.worklist import duration

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


#: The periods a patient page offers, in days.
PERIODS = (30, 90)


def _rule_concepts(rule_id: str) -> frozenset[str]:
    try:
        return frozenset(default_rule_set().get(rule_id).concepts)
    except KeyError:
        return frozenset()


def patient_charts(overview: Overview, zone: tzinfo) -> list[Chart]:
    """The charts of a patient page (the concept table's): series, lines and alert markers."""
    charts = []
    for spec in CHARTS:
        series = tuple(
            Series(
                concept,
                BY_KEY[concept].label,
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
                state = "open" if alert.is_open else "resolved"
                markers.append(
                    Marker(
                        alert.start,
                        alert.level,
                        f"{alert.rule_id} ({state}): {alert.text}",
                        alert.is_open,
                        frozenset(evidence),
                    )
                )
        if not spec.always and not refs and not markers:
            continue
        lines = tuple(
            Line(ln.value, ln.level, ln.label, ln.personal)
            for ln in overview.lines
            if ln.concept in spec.concepts
        )
        charts.append(
            Chart(
                key=spec.key,
                title=spec.title,
                unit=BY_KEY[spec.concepts[0]].shown_unit,
                start=overview.since,
                end=overview.until,
                series=series,
                lines=lines,
                markers=tuple(markers),
                zone=zone,
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
            local_time(at, chart.zone),
            tuple(values.get(i, "") for i in range(len(chart.series))),
            at in flagged,
        )
        for at, values in sorted(moments.items(), reverse=True)
    ]


def local_time(at: datetime, zone: tzinfo) -> str:
    """``23 Nov 2026 08:05`` in the service's time zone."""
    local = at.astimezone(zone)
    return f"{local.day} {_MONTHS[local.month - 1]} {local.year} {local:%H:%M}"


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
    return env


def page(template: str, **context: Any) -> str:
    """Render one page template."""
    return environment().get_template(template).render(**context)
