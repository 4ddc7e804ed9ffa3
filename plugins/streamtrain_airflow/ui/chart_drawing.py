"""matplotlib drawing of the charts listed in :mod:`.charts` (SVG backend, no GUI, no JS)."""
from __future__ import annotations

import datetime as _dt
import io
import threading

import matplotlib

matplotlib.use("Agg")  # never a GUI backend inside the API server

import matplotlib.dates  # noqa: E402
from matplotlib.backends.backend_svg import FigureCanvasSVG  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

_RC = {
    "svg.fonttype": "none",       # text stays text: small files, selectable, searchable
    "svg.hashsalt": "streamtrain",  # stable element ids: same data, same bytes
    "font.size": 8,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_MISSING_COLOR = "#d62728"
_EPOCH = _dt.datetime(1970, 1, 1)
# matplotlib's text layout keeps global state: one figure at a time per process is the safe side.
_render_lock = threading.Lock()


def _when(hour: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(hours=hour)


def _vals(points: list[dict], key: str) -> tuple[list, list]:
    xs, ys = [], []
    for p in points:
        if p.get(key) is not None:
            xs.append(_when(p["hour"]))
            ys.append(p[key])
    return xs, ys


def _bar_width(series: dict) -> float:
    """Line width (points) of one hour's bar: about 80% of an hour on a 7-inch axis.

    Bars are drawn as one ``vlines`` collection, not one ``Rectangle`` per hour: a window of
    thousands of hours stays one SVG path and draws in milliseconds."""
    hours = max(1, series["end_hour"] - series["start_hour"] + 1)
    return max(0.4, min(8.0, 0.8 * 7 * 72 / hours))


def _mark_missing(ax, series: dict) -> bool:
    for m in series["missing"]:
        span = ax.axvspan(_when(m["hour"]), _when(m["hour"] + 1), color=_MISSING_COLOR,
                          alpha=0.25, lw=0)
        span.set_gid(f"missing-{m['hour']}")
    return bool(series["missing"])


def _finish(fig, ax, series: dict, handles: list, labels: list) -> None:
    if _mark_missing(ax, series):
        handles = handles + [Patch(color=_MISSING_COLOR, alpha=0.25)]
        labels = labels + [f"missing hour ({len(series['missing'])})"]
    if handles:
        ax.legend(handles, labels, loc="upper left", fontsize=7, framealpha=0.8, ncols=4)
    ax.set_xlim(_when(series["start_hour"]), _when(series["end_hour"] + 1))
    loc = matplotlib.dates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(matplotlib.dates.ConciseDateFormatter(loc))
    ax.set_xlabel("data hour (UTC)")


def _last(points: list[dict], key: str, fmt: str) -> str:
    for p in reversed(points):
        if p.get(key) is not None:
            return f"{key} at {p['hour_str']} = {format(p[key], fmt)}"
    return f"{key}: no data"


def _quality(fig, series):
    ax = fig.subplots()
    pts = series["points"]
    x, y = _vals(pts, "auc")
    (auc,) = ax.plot(x, y, marker=".", ms=3, color="#1f77b4", gid="auc")
    ax.set_ylabel("AUC")
    ax2 = ax.twinx()
    ax2.grid(False)
    x, y = _vals(pts, "logloss")
    (ll,) = ax2.plot(x, y, marker=".", ms=3, color="#ff7f0e", gid="logloss")
    ax2.set_ylabel("logloss")
    _finish(fig, ax, series, [auc, ll], ["AUC", "logloss"])
    return "; ".join([_last(pts, "auc", ".4f"), _last(pts, "logloss", ".4f")])


def _table(fig, series):
    ax = fig.subplots()
    pts = series["points"]
    x, y = _vals(pts, "table_rows")
    (rows,) = ax.plot(x, y, color="#2ca02c", marker=".", ms=3, gid="table_rows")
    ax.set_ylabel("table rows")
    ax2 = ax.twinx()
    ax2.grid(False)
    lw = _bar_width(series)
    xa, ya = _vals(pts, "ids_admitted")
    adm = ax2.vlines(xa, 0, ya, lw=lw, color="#17becf", alpha=0.7, gid="ids_admitted")
    xe, ye = _vals(pts, "rows_evicted")
    ev = ax2.vlines(xe, 0, [-v for v in ye], lw=lw, color="#9467bd", alpha=0.7, gid="rows_evicted")
    ax2.axhline(0, color="#555", lw=0.5)
    ax2.set_ylabel("admitted (+) / evicted (−) per hour")
    _finish(fig, ax, series, [rows, adm, ev], ["table rows", "ids admitted", "rows evicted"])
    return "; ".join([_last(pts, "table_rows", "d"), _last(pts, "ids_admitted", "d"),
                      _last(pts, "rows_evicted", "d")])


def _throughput(fig, series):
    ax = fig.subplots()
    pts = series["points"]
    x, y = _vals(pts, "rows_per_s")
    (line,) = ax.plot(x, y, marker=".", ms=3, color="#8c564b", gid="rows_per_s")
    ax.set_ylabel("examples / s")
    ax.set_ylim(bottom=0)
    _finish(fig, ax, series, [line], ["examples/s"])
    return _last(pts, "rows_per_s", ".1f")


def _size(fig, series):
    ax = fig.subplots()
    pts = series["points"]
    lw = _bar_width(series)
    handles, labels = [], []
    positive = [p["bytes"] for p in pts if p.get("bytes")]
    floor = min(positive) / 2 if positive else 0
    for kind, color in (("full", "#1f77b4"), ("delta", "#aec7e8")):
        sel = [p for p in pts if p["kind"] == kind and p.get("bytes")]
        if sel:
            handles.append(ax.vlines([_when(p["hour"]) for p in sel], floor,
                                     [p["bytes"] for p in sel], lw=lw, color=color,
                                     gid=f"bytes_{kind}"))
            labels.append(f"{kind} ({len(sel)})")
    if positive:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    ax.set_ylabel("bytes saved")
    _finish(fig, ax, series, handles, labels)
    return _last(pts, "bytes", "d")


_DRAW = {"quality": _quality, "table": _table, "throughput": _throughput, "size": _size}


def draw_svg(chart: str, series: dict, *, title: str) -> str:
    """SVG text of `chart` over `series`; see :func:`.charts.render`."""
    draw = _DRAW[chart]
    with _render_lock, matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7.5, 2.6), layout="constrained")
        FigureCanvasSVG(fig)
        description = draw(fig, series)
        if not series["points"] and not series["missing"]:
            fig.axes[0].text(0.5, 0.5, "no versions in this window", ha="center", va="center",
                             transform=fig.axes[0].transAxes, color="#777")
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={
            "Title": title, "Description": description, "Date": None,
            "Creator": "streamtrain"})
    return buf.getvalue()
