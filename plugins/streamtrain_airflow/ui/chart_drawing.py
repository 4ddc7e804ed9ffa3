"""matplotlib drawing of the charts listed in :mod:`.charts` (SVG backend, no GUI, no JS)."""
from __future__ import annotations

import io
import threading

import matplotlib

matplotlib.use("Agg")  # never a GUI backend inside the API server

import matplotlib.dates  # noqa: E402
from matplotlib.backends.backend_svg import FigureCanvasSVG  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from trainer.hours import hour_start  # noqa: E402

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
# matplotlib's text layout keeps global state: one figure at a time per process is the safe side.
_render_lock = threading.Lock()


def _vals(points: list[dict], key: str) -> tuple[list, list]:
    xs, ys = [], []
    for p in points:
        if p.get(key) is not None:
            xs.append(hour_start(p["hour"]))
            ys.append(p[key])
    return xs, ys


def _hourly(series: dict, points: list[dict], value, fill: float = 0.0):
    """(edges, values) of one value per hour over the whole window, `fill` where there is none.

    Per-hour bars are drawn with ``stairs`` as ONE filled path, not one ``Rectangle`` per hour,
    so a window of thousands of hours stays a small SVG that draws quickly."""
    start, end = series["start_hour"], series["end_hour"]
    values = [fill] * (end - start + 1)
    for p in points:
        v = value(p)
        if v is not None and start <= p["hour"] <= end:
            values[p["hour"] - start] = v
    return [hour_start(h) for h in range(start, end + 2)], values


def _marker(points: list[dict]) -> dict:
    return {"marker": ".", "ms": 3} if len(points) <= 240 else {}


def _mark_missing(ax, series: dict) -> bool:
    for m in series["missing"]:
        span = ax.axvspan(hour_start(m["hour"]), hour_start(m["hour"] + 1), color=_MISSING_COLOR,
                          alpha=0.25, lw=0)
        span.set_gid(f"missing-{m['hour']}")
    return bool(series["missing"])


def _finish(fig, ax, series: dict, handles: list, labels: list) -> None:
    if _mark_missing(ax, series):
        handles = handles + [Patch(color=_MISSING_COLOR, alpha=0.25)]
        labels = labels + [f"missing hour ({len(series['missing'])})"]
    if handles:
        ax.legend(handles, labels, loc="upper left", fontsize=7, framealpha=0.8, ncols=4)
    ax.set_xlim(hour_start(series["start_hour"]), hour_start(series["end_hour"] + 1))
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
    (auc,) = ax.plot(x, y, color="#1f77b4", gid="auc", **_marker(pts))
    ax.set_ylabel("AUC")
    ax2 = ax.twinx()
    ax2.grid(False)
    x, y = _vals(pts, "logloss")
    (ll,) = ax2.plot(x, y, color="#ff7f0e", gid="logloss", **_marker(pts))
    ax2.set_ylabel("logloss")
    _finish(fig, ax, series, [auc, ll], ["AUC", "logloss"])
    return "; ".join([_last(pts, "auc", ".4f"), _last(pts, "logloss", ".4f")])


def _calibration(fig, series):
    """Predicted and actual CTR of each hour on one axis (they should coincide), COPC (actual /
    predicted clicks) on the other with its ideal value 1 marked."""
    ax = fig.subplots()
    pts = series["points"]
    x, y = _vals(pts, "pred_ctr")
    (pred,) = ax.plot(x, y, color="#1f77b4", gid="pred_ctr", **_marker(pts))
    x, y = _vals(pts, "actual_ctr")
    (actual,) = ax.plot(x, y, color="#2ca02c", gid="actual_ctr", **_marker(pts))
    ax.set_ylabel("CTR")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.grid(False)
    x, y = _vals(pts, "copc")
    (copc,) = ax2.plot(x, y, color="#7f7f7f", lw=0.8, ls="--", gid="copc")
    ax2.axhline(1.0, color="#7f7f7f", lw=0.5, ls=":")
    ax2.set_ylabel("COPC (actual / predicted)")
    _finish(fig, ax, series, [pred, actual, copc], ["predicted CTR", "actual CTR", "COPC"])
    return "; ".join([_last(pts, "pred_ctr", ".4f"), _last(pts, "actual_ctr", ".4f"),
                      _last(pts, "copc", ".3f")])


def _table(fig, series):
    ax = fig.subplots()
    pts = series["points"]
    x, y = _vals(pts, "table_rows")
    (rows,) = ax.plot(x, y, color="#2ca02c", gid="table_rows", **_marker(pts))
    ax.set_ylabel("table rows")
    ax2 = ax.twinx()
    ax2.grid(False)
    edges, adm_v = _hourly(series, pts, lambda p: p.get("ids_admitted"))
    adm = ax2.stairs(adm_v, edges, fill=True, color="#17becf", alpha=0.6, gid="ids_admitted")
    evicted = lambda p: None if p.get("rows_evicted") is None else -p["rows_evicted"]  # noqa: E731
    edges, ev_v = _hourly(series, pts, evicted)
    ev = ax2.stairs(ev_v, edges, fill=True, color="#9467bd", alpha=0.6, gid="rows_evicted")
    ax2.axhline(0, color="#555", lw=0.5)
    ax2.set_ylabel("admitted (+) / evicted (−) per hour")
    _finish(fig, ax, series, [rows, adm, ev], ["table rows", "ids admitted", "rows evicted"])
    return "; ".join([_last(pts, "table_rows", "d"), _last(pts, "ids_admitted", "d"),
                      _last(pts, "rows_evicted", "d")])


def _throughput(fig, series):
    ax = fig.subplots()
    pts = series["points"]
    x, y = _vals(pts, "rows_per_s")
    (line,) = ax.plot(x, y, color="#8c564b", gid="rows_per_s", **_marker(pts))
    ax.set_ylabel("examples / s")
    ax.set_ylim(bottom=0)
    _finish(fig, ax, series, [line], ["examples/s"])
    return _last(pts, "rows_per_s", ".1f")


def _size(fig, series):
    ax = fig.subplots()
    pts = series["points"]
    handles, labels = [], []
    positive = [p["bytes"] for p in pts if p.get("bytes")]
    floor = min(positive) / 2 if positive else 0
    for kind, color in (("full", "#1f77b4"), ("delta", "#aec7e8")):
        sel = [p for p in pts if p["kind"] == kind and p.get("bytes")]
        if sel:
            edges, vals = _hourly(series, sel, lambda p: p["bytes"], fill=floor)
            handles.append(ax.stairs(vals, edges, baseline=floor, fill=True, color=color,
                                     gid=f"bytes_{kind}"))
            labels.append(f"{kind} ({len(sel)})")
    if positive:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    ax.set_ylabel("bytes saved")
    _finish(fig, ax, series, handles, labels)
    return _last(pts, "bytes", "d")


_DRAW = {"quality": _quality, "calibration": _calibration, "table": _table, "throughput": _throughput, "size": _size}


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
