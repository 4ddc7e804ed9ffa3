"""The charts of a model page: names, titles and :func:`render` (SVG text).

Drawing is done by matplotlib's SVG backend in :mod:`.chart_drawing`, imported on first use so
that importing the plugin (every Airflow component does) does not import matplotlib.
Missing hours are shaded on every time chart (SVG group id ``missing-<hour>``); the plotted
series carry group ids (``auc``, ``logloss``, ``table_rows``, ...) and the SVG's
``<dc:description>`` holds the last values in words, so a test or a screen reader can check them.

>>> svg = render("quality", {"points": [], "missing": [], "start_hour": 0, "end_hour": 0})
>>> svg.startswith("<?xml") and "</svg>" in svg
True
"""
from __future__ import annotations

CHARTS = {
    "quality": "Progressive AUC and logloss per data hour",
    "calibration": "Predicted vs actual CTR (and COPC) per data hour",
    "table": "Table rows, ids admitted and rows evicted per data hour",
    "throughput": "Examples per second per data hour",
    "size": "Bytes saved per version",
}


def render(chart: str, series: dict, *, title: str | None = None) -> str:
    """SVG text of `chart` (one of :data:`CHARTS`) over `series` (:func:`.data.series`)."""
    if chart not in CHARTS:
        raise KeyError(f"no chart {chart!r}; charts: {sorted(CHARTS)}")
    from .chart_drawing import draw_svg

    return draw_svg(chart, series, title=title or CHARTS[chart])
