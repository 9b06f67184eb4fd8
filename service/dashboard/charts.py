"""Trend charts as server-rendered SVG: plain functions over typed values, no I/O.

:func:`layout` computes where everything goes (scales, ticks, point, line and marker
coordinates); :func:`render` turns that into SVG markup. Every text is escaped; colours are SVG
presentation attributes (no inline CSS, so a strict Content-Security-Policy holds), and the
chart is an accessible image (``role="img"`` with a title and a description; each point, line
and marker has its own ``<title>``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from markupsafe import Markup, escape

from service.core.messages import month_name

WIDTH = 640
HEIGHT = 240
LEFT, RIGHT, TOP, BOTTOM = 46, 36, 26, 44  # the plot area's margins
MARKER_ROW = 10  # alert markers sit this far below the x axis

#: Colours per level (alert severity, personal reference) and per series position.
LEVEL_COLOURS = {
    "reference": "#6d28d9",
    "info": "#2563eb",
    "orange": "#d97706",
    "red": "#dc2626",
}
SERIES_COLOURS = ("#1e3a8a", "#0f766e", "#7c3aed")


@dataclass(frozen=True, slots=True)
class Point:
    """One measurement: when, its value, and the Observation it came from."""

    at: datetime
    value: float
    ref: str = ""


@dataclass(frozen=True, slots=True)
class Series:
    """One line of points (e.g. systolic blood pressure)."""

    key: str
    label: str
    points: tuple[Point, ...]


@dataclass(frozen=True, slots=True)
class Line:
    """A horizontal threshold or reference line."""

    value: float
    level: str  # a key of LEVEL_COLOURS
    label: str
    personal: bool = False
    fired: bool = False  # the limit an alert on this chart fired on (drawn solid)
    since: datetime | None = None  # a limit relative to an earlier reading holds from then on


@dataclass(frozen=True, slots=True)
class Marker:
    """An alert: a mark on the time axis at ``at``, rings around its evidence points."""

    at: datetime
    level: str
    label: str
    active: bool
    refs: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything one chart shows, over the period ``start`` to ``end``."""

    key: str
    title: str
    unit: str
    start: datetime
    end: datetime
    series: tuple[Series, ...]
    lines: tuple[Line, ...] = ()
    markers: tuple[Marker, ...] = ()
    zone: tzinfo = UTC  # for the day labels
    #: The smallest value range shown (weight: 4 kg, so that 0.5 kg does not look like a swing).
    min_span: float = 0.0
    empty_text: str = "No measurements in this period"
    language: str = "en"  # of the data table's times

    @property
    def empty(self) -> bool:
        """True when no series has a point."""
        return not any(s.points for s in self.series)


@dataclass(frozen=True, slots=True)
class Scale:
    """Maps time to x and value to y inside the plot area."""

    start: datetime
    end: datetime
    low: float
    high: float
    x0: float = LEFT
    x1: float = WIDTH - RIGHT
    y0: float = TOP  # top of the plot (``high``)
    y1: float = HEIGHT - BOTTOM  # bottom of the plot (``low``)

    def x(self, at: datetime) -> float:
        """The x coordinate of a moment (clamped to the plot)."""
        span = (self.end - self.start).total_seconds() or 1.0
        share = (at - self.start).total_seconds() / span
        return round(self.x0 + min(max(share, 0.0), 1.0) * (self.x1 - self.x0), 2)

    def y(self, value: float) -> float:
        """The y coordinate of a value."""
        share = (value - self.low) / ((self.high - self.low) or 1.0)
        return round(self.y1 - share * (self.y1 - self.y0), 2)


@dataclass(slots=True)
class Layout:
    """Where everything of one chart goes."""

    scale: Scale
    y_ticks: list[tuple[float, float]]  # (value, y)
    x_ticks: list[tuple[str, float]]  # (label, x)
    points: list[tuple[int, float, float, Point]]  # (series index, x, y, point)
    lines: list[tuple[float, Line]]  # (y, line)
    markers: list[tuple[float, Marker]]  # (x, marker)
    rings: list[tuple[float, float, Marker]] = field(default_factory=list)  # (x, y, marker)


def nice_step(span: float, target: int = 5) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten): about ``target`` ticks."""
    if span <= 0:
        return 1.0
    raw = span / target
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def value_range(chart: Chart) -> tuple[float, float]:
    """The value range shown: every point and line, padded, on round tick values."""
    values = [p.value for s in chart.series for p in s.points] + [ln.value for ln in chart.lines]
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if high - low < chart.min_span:
        middle = (low + high) / 2
        low, high = middle - chart.min_span / 2, middle + chart.min_span / 2
    if high - low < 1e-9:
        low, high = low - 1, high + 1
    pad = (high - low) * 0.08
    step = nice_step(high - low + 2 * pad)
    return math.floor((low - pad) / step) * step, math.ceil((high + pad) / step) * step


def _ticks(low: float, high: float) -> list[float]:
    step = nice_step(high - low)
    first = math.ceil(low / step - 1e-9) * step
    count = math.floor((high - first) / step + 1e-9) + 1
    return [round(first + i * step, 6) for i in range(count)]


def _day_label(day: datetime, language: str) -> str:
    return f"{day.day} {month_name(day.month, language)}"


def _day_ticks(chart: Chart, scale: Scale) -> list[tuple[str, float]]:
    """Local midnights, every week (every two weeks beyond 45 days), counted back from the end."""
    days = (chart.end - chart.start).total_seconds() / 86400
    every = 7 if days <= 45 else 14
    local_end = chart.end.astimezone(chart.zone)
    midnight = local_end.replace(hour=0, minute=0, second=0, microsecond=0)
    ticks = []
    day = midnight
    while day >= chart.start:
        ticks.append((_day_label(day, chart.language), scale.x(day)))
        # step back in local days (a DST change keeps labels on midnight)
        day = (day.replace(tzinfo=None) - timedelta(days=every)).replace(tzinfo=chart.zone)
    return list(reversed(ticks))


def layout(chart: Chart) -> Layout:
    """Compute the coordinates of every element of ``chart``."""
    low, high = value_range(chart)
    scale = Scale(chart.start, chart.end, low, high)
    points = [
        (i, scale.x(p.at), scale.y(p.value), p)
        for i, s in enumerate(chart.series)
        for p in sorted(s.points, key=lambda p: p.at)
        if chart.start <= p.at <= chart.end
    ]
    markers = [(scale.x(m.at), m) for m in chart.markers if chart.start <= m.at <= chart.end]
    rings = [(x, y, m) for _, m in markers for _, x, y, p in points if p.ref and p.ref in m.refs]
    return Layout(
        scale=scale,
        y_ticks=[(v, scale.y(v)) for v in _ticks(low, high)],
        x_ticks=_day_ticks(chart, scale),
        points=points,
        lines=[(scale.y(ln.value), ln) for ln in chart.lines],
        markers=markers,
        rings=rings,
    )


def _fmt(value: float) -> str:
    return f"{value:g}"


def _when(at: datetime, zone: tzinfo, language: str = "en") -> str:
    local = at.astimezone(zone)
    return f"{_day_label(local, language)} {local:%H:%M}"


def _title(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def describe(chart: Chart) -> str:
    """A one-paragraph text summary of the chart (its accessible description)."""
    if chart.empty:
        return f"No {chart.title} measurements in this period."
    parts = []
    for s in chart.series:
        if s.points:
            latest = max(s.points, key=lambda p: p.at)
            parts.append(
                f"{s.label}: {len(s.points)} measurements, latest {_fmt(latest.value)} "
                f"{chart.unit} on {_when(latest.at, chart.zone, chart.language)}"
            )
    if chart.lines:
        parts.append("thresholds " + ", ".join(ln.label for ln in chart.lines))
    if chart.markers:
        parts.append(f"{len(chart.markers)} alert(s) marked")
    return "; ".join(parts) + "."


def _frame(lay: Layout, unit: str, empty: bool) -> Iterable[str]:
    s = lay.scale
    for value, y in [] if empty else lay.y_ticks:
        yield (
            f'<line class="grid" x1="{s.x0}" y1="{y}" x2="{s.x1}" y2="{y}" '
            'stroke="#e5e7eb" stroke-width="1"/>'
        )
        yield (
            f'<text class="tick" x="{s.x0 - 6}" y="{y + 4}" text-anchor="end" '
            f'font-size="11" fill="#4b5563">{escape(_fmt(value))}</text>'
        )
    for label, x in lay.x_ticks:
        yield (
            f'<line class="grid" x1="{x}" y1="{s.y0}" x2="{x}" y2="{s.y1}" '
            'stroke="#f1f5f9" stroke-width="1"/>'
        )
        yield (
            f'<text class="tick" x="{x}" y="{s.y1 + MARKER_ROW + 22}" text-anchor="middle" '
            f'font-size="11" fill="#4b5563">{escape(label)}</text>'
        )
    yield (
        f'<line class="axis" x1="{s.x0}" y1="{s.y1}" x2="{s.x1}" y2="{s.y1}" '
        'stroke="#9ca3af" stroke-width="1"/>'
    )
    yield (
        f'<text class="unit" x="4" y="{s.y0 - 12}" font-size="11" '
        f'fill="#6b7280">{escape(unit)}</text>'
    )


def _threshold_lines(lay: Layout) -> Iterable[str]:
    s = lay.scale
    for y, line in lay.lines:
        colour = LEVEL_COLOURS.get(line.level, "#6b7280")
        dash = "2 3" if line.level == "reference" else "6 4"
        personal = " personal" if line.personal else ""
        fired = " fired" if line.fired else ""
        # The limit an alert fired on: solid and heavier, so the alert and its line agree.
        stroke = (
            'stroke-width="2.5"' if line.fired else f'stroke-width="1.5" stroke-dasharray="{dash}"'
        )
        yield (
            f'<g class="threshold threshold-{escape(line.level)}{personal}{fired}" '
            f'data-value="{escape(_fmt(line.value))}">{_title(line.label)}'
            f'<line x1="{s.x0 if line.since is None else s.x(line.since)}" y1="{y}" '
            f'x2="{s.x1}" y2="{y}" stroke="{colour}" {stroke}/>'
            f'<text x="{s.x1 + 4}" y="{y + 3.5}" font-size="10" fill="{colour}">'
            f"{escape(_fmt(line.value))}{'★' if line.personal else ''}</text></g>"
        )


def _markers(lay: Layout, zone: tzinfo, language: str) -> Iterable[str]:
    s = lay.scale
    base = s.y1 + 2
    for x, marker in lay.markers:
        colour = LEVEL_COLOURS.get(marker.level, "#6b7280")
        fill = colour if marker.active else "#ffffff"
        state = "open" if marker.active else "closed"
        yield (
            f'<g class="alert-marker alert-{escape(marker.level)} alert-{state}" '
            f'data-at="{escape(marker.at.isoformat())}">'
            f"{_title(f'{_when(marker.at, zone, language)} — {marker.label}')}"
            f'<line x1="{x}" y1="{s.y0}" x2="{x}" y2="{s.y1}" stroke="{colour}" '
            'stroke-width="1" stroke-opacity="0.45" stroke-dasharray="3 3"/>'
            f'<path d="M{x} {base} L{x - 5} {base + MARKER_ROW} L{x + 5} {base + MARKER_ROW} Z" '
            f'fill="{fill}" stroke="{colour}" stroke-width="1.5"/></g>'
        )
    for x, y, marker in lay.rings:
        colour = LEVEL_COLOURS.get(marker.level, "#6b7280")
        yield (
            f'<circle class="evidence evidence-{escape(marker.level)}" cx="{x}" cy="{y}" r="6.5" '
            f'fill="none" stroke="{colour}" stroke-width="2">{_title(marker.label)}</circle>'
        )


def _series(chart: Chart, lay: Layout) -> Iterable[str]:
    for index, series in enumerate(chart.series):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        mine = [(x, y, p) for i, x, y, p in lay.points if i == index]
        if not mine:
            continue
        path = " ".join(f"{x},{y}" for x, y, _ in mine)
        yield (
            f'<g class="series series-{escape(series.key)}">'
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5" '
            'stroke-linejoin="round"/>'
        )
        for x, y, p in mine:
            when = _when(p.at, chart.zone, chart.language)
            text = f"{when}: {series.label} {_fmt(p.value)} {chart.unit}"
            yield (
                f'<circle class="point" cx="{x}" cy="{y}" r="2.8" fill="{colour}" '
                f'data-ref="{escape(p.ref)}">{_title(text)}</circle>'
            )
        yield "</g>"


def render(chart: Chart) -> Markup:
    """The chart as an inline SVG element (safe markup: every text is escaped)."""
    lay = layout(chart)
    key = escape(chart.key)
    title = f"{chart.title} ({chart.unit})" if chart.unit else chart.title
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="chart-{key}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'data-low="{_fmt(lay.scale.low)}" data-high="{_fmt(lay.scale.high)}" '
        f'aria-labelledby="chart-{key}-title chart-{key}-desc" '
        'font-family="system-ui, sans-serif">',
        f'<title id="chart-{key}-title">{escape(title)}</title>',
        f'<desc id="chart-{key}-desc">{escape(describe(chart))}</desc>',
        *_frame(lay, chart.unit, chart.empty and not chart.lines),
        *_threshold_lines(lay),
        *_markers(lay, chart.zone, chart.language),
        *_series(chart, lay),
    ]
    if chart.empty:
        s = lay.scale
        parts.append(
            f'<text class="empty" x="{(s.x0 + s.x1) / 2}" y="{(s.y0 + s.y1) / 2}" '
            f'text-anchor="middle" font-size="13" fill="#6b7280">{escape(chart.empty_text)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
