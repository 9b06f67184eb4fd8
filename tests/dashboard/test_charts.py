"""The SVG trend charts: scales, ticks, threshold lines, alert markers, escaping, accessibility."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from service.dashboard.charts import (
    HEIGHT,
    LEFT,
    RIGHT,
    TOP,
    WIDTH,
    Chart,
    Line,
    Marker,
    Point,
    Series,
    layout,
    nice_step,
    render,
    value_range,
)

SVG = "{http://www.w3.org/2000/svg}"
AMS = ZoneInfo("Europe/Amsterdam")
END = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
START = END - timedelta(days=30)
X0, X1 = LEFT, WIDTH - RIGHT


def _chart(**kw: object) -> Chart:
    values = {
        "key": "hr",
        "title": "Heart rate",
        "unit": "/min",
        "start": START,
        "end": END,
        "series": (
            Series(
                "hr",
                "HR",
                (
                    Point(START, 60, "o1"),
                    Point(START + timedelta(days=15), 80, "o2"),
                    Point(END, 100, "o3"),
                ),
            ),
        ),
        "zone": AMS,
    }
    values.update(kw)
    return Chart(**values)  # type: ignore[arg-type]


def _svg(chart: Chart) -> ET.Element:
    return ET.fromstring(str(render(chart)))


def test_nice_steps_are_round_numbers() -> None:
    assert nice_step(40) == 10
    assert nice_step(3.2) == 1
    assert nice_step(12) == 2.5
    assert nice_step(0.9) == 0.2
    assert nice_step(0) == 1


def test_value_range_covers_points_and_threshold_lines_on_round_ticks() -> None:
    low, high = value_range(_chart())
    assert low <= 60 and high >= 100
    low, high = value_range(_chart(lines=(Line(130, "red", "HR > 130"),)))
    assert high >= 130 and low <= 60
    assert (low % 10, high % 10) == (0, 0)  # on the tick step of a ~70-wide range


def test_points_are_placed_by_time_and_value() -> None:
    lay = layout(_chart())
    (_, xa, ya, _), (_, xb, yb, _), (_, xc, yc, _) = lay.points
    assert (xa, xc) == (X0, X1)  # the period's ends are the plot's edges
    assert xb == (X0 + X1) / 2  # half way in time, half way across
    assert ya > yb > yc  # higher values are drawn higher (smaller y)
    scale = lay.scale
    assert scale.y(scale.low) == HEIGHT - 44 and scale.y(scale.high) == TOP
    assert yb == scale.y(80)


def test_points_outside_the_period_are_left_out() -> None:
    late = Series("hr", "HR", (Point(START - timedelta(days=1), 70, "old"), Point(END, 71, "new")))
    assert [p.ref for _, _, _, p in layout(_chart(series=(late,))).points] == ["new"]


def test_threshold_lines_are_drawn_at_their_value() -> None:
    lines = (Line(110, "orange", "HR > 110 (HF-HR-HIGH)"), Line(50, "red", "HR < 50", True))
    chart = _chart(lines=lines)
    lay = layout(chart)
    assert [(y, line.value) for y, line in lay.lines] == [
        (lay.scale.y(110), 110),
        (lay.scale.y(50), 50),
    ]
    svg = _svg(chart)
    groups = [g for g in svg.iter(f"{SVG}g") if "threshold" in g.get("class", "")]
    assert [g.get("data-value") for g in groups] == ["110", "50"]
    orange, red = groups
    line = orange.find(f"{SVG}line")
    assert line is not None
    assert float(line.get("y1", "")) == lay.scale.y(110) == float(line.get("y2", ""))
    assert (float(line.get("x1", "")), float(line.get("x2", ""))) == (X0, X1)
    assert line.get("stroke") == "#d97706" and line.get("stroke-dasharray")
    assert "personal" in red.get("class", "") and "personal" not in orange.get("class", "")
    title = orange.find(f"{SVG}title")
    assert title is not None and title.text == "HR > 110 (HF-HR-HIGH)"


def test_alert_markers_sit_on_the_time_axis_and_ring_their_evidence() -> None:
    at = START + timedelta(days=15)
    marker = Marker(at, "red", "HF-HR-HIGH: HR 80", True, frozenset({"o2"}))
    closed = Marker(END, "orange", "resolved one", False)
    lay = layout(_chart(markers=(marker, closed)))
    assert [(x, m.label) for x, m in lay.markers] == [
        ((X0 + X1) / 2, "HF-HR-HIGH: HR 80"),
        (X1, "resolved one"),
    ]
    ((rx, ry, ringed),) = lay.rings
    point = next((x, y) for _, x, y, p in lay.points if p.ref == "o2")
    assert (rx, ry) == point and ringed is marker
    svg = _svg(_chart(markers=(marker, closed)))
    groups = [g for g in svg.iter(f"{SVG}g") if "alert-marker" in g.get("class", "")]
    assert [g.get("class") for g in groups] == [
        "alert-marker alert-red alert-open",
        "alert-marker alert-orange alert-closed",
    ]
    triangle = groups[0].find(f"{SVG}path")
    assert triangle is not None and triangle.get("d", "").startswith(f"M{(X0 + X1) / 2} ")
    assert triangle.get("fill") == "#dc2626"  # open: filled
    hollow = groups[1].find(f"{SVG}path")
    assert hollow is not None and hollow.get("fill") == "#ffffff"  # resolved: hollow
    rings = [c for c in svg.iter(f"{SVG}circle") if "evidence" in c.get("class", "")]
    assert [(float(c.get("cx", "")), float(c.get("cy", ""))) for c in rings] == [point]


def test_svg_is_an_accessible_image_with_a_text_description() -> None:
    svg = _svg(_chart(lines=(Line(110, "orange", "HR > 110"),)))
    assert svg.get("role") == "img"
    assert svg.get("aria-labelledby") == "chart-hr-title chart-hr-desc"
    title = svg.find(f"{SVG}title")
    desc = svg.find(f"{SVG}desc")
    assert title is not None and title.text == "Heart rate (/min)"
    assert desc is not None and desc.text is not None
    assert "3 measurements, latest 100 /min on 23 Nov 10:00" in desc.text  # Amsterdam time
    assert "thresholds HR > 110" in desc.text
    points = [c for c in svg.iter(f"{SVG}circle") if c.get("class") == "point"]
    assert len(points) == 3
    first = points[0].find(f"{SVG}title")
    assert first is not None and first.text == "24 Oct 11:00: HR 60 /min"


def test_every_text_is_escaped() -> None:
    evil = "<script>alert(1)</script>"
    chart = _chart(
        title=evil,
        series=(Series("x", evil, (Point(END, 1, '"><b>'),)),),
        lines=(Line(2, "red", evil),),
        markers=(Marker(END, "red", evil, True),),
    )
    markup = str(render(chart))
    assert "<script>" not in markup and "<b>" not in markup
    assert "&lt;script&gt;" in markup
    ET.fromstring(markup)  # still well-formed XML


def test_day_ticks_are_local_midnights_weekly_for_30_days_fortnightly_for_90() -> None:
    ticks = layout(_chart()).x_ticks
    assert [label for label, _ in ticks] == ["26 Oct", "2 Nov", "9 Nov", "16 Nov", "23 Nov"]
    # 23 Nov 00:00 in Amsterdam is 22 Nov 23:00 UTC: ten hours before the end
    scale = layout(_chart()).scale
    assert ticks[-1][1] == scale.x(datetime(2026, 11, 22, 23, 0, tzinfo=UTC))
    long = layout(_chart(start=END - timedelta(days=90))).x_ticks
    assert [label for label, _ in long] == [
        "31 Aug",
        "14 Sep",
        "28 Sep",
        "12 Oct",
        "26 Oct",
        "9 Nov",
        "23 Nov",
    ]
    # across the end of summer time (25 Oct) the ticks stay on local midnight
    assert long[3][1] == layout(_chart(start=END - timedelta(days=90))).scale.x(
        datetime(2026, 10, 11, 22, 0, tzinfo=UTC)
    )


def test_an_empty_chart_says_so() -> None:
    chart = _chart(series=(Series("cat", "CAT", ()),), title="CAT score", unit="points")
    assert chart.empty
    svg = _svg(chart)
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "No measurements in this period" in texts
    desc = svg.find(f"{SVG}desc")
    assert desc is not None and desc.text == "No CAT score measurements in this period."


def test_a_fired_limit_is_solid_and_a_relative_one_starts_at_its_reference() -> None:
    since = START + timedelta(days=27)
    chart = _chart(
        lines=(
            Line(85.2, "info", "High heart rate: personal limit ≥ 85.2/min", True, fired=True),
            Line(90, "orange", "weight gain", fired=True, since=since),
        )
    )
    lay = layout(chart)
    groups = [g for g in _svg(chart).iter(f"{SVG}g") if "threshold" in g.get("class", "")]
    assert all("fired" in g.get("class", "") for g in groups)
    whole, relative = (g.find(f"{SVG}line") for g in groups)
    assert whole is not None and relative is not None
    assert whole.get("stroke-dasharray") is None and whole.get("stroke-width") == "2.5"
    assert float(whole.get("x1", "")) == X0
    assert float(relative.get("x1", "")) == lay.scale.x(since) > X0


def test_a_minimum_span_keeps_small_changes_small() -> None:
    flat = (Series("weight", "Weight", (Point(START, 80.0), Point(END, 80.5))),)
    low, high = value_range(_chart(series=flat, min_span=4.0))
    assert high - low >= 4.0 and low <= 78.25 and high >= 82.25
    low, high = value_range(_chart(series=flat))
    assert high - low < 2  # without it, half a kilo fills the chart


def test_dutch_day_labels() -> None:
    ticks = [label for label, _ in layout(_chart(language="nl")).x_ticks]
    assert ticks[-1] == "23 nov" and any(t.endswith(" okt") for t in ticks)
