"""Learning quality of streamtrain's defaults on four hourly streams, beside simple baselines.

Per stream, in one run: every hour is trained through the real command line (``streamtrain
run-hour``: mpiexec, 1 server + 1 worker, the documented defaults) and its progressive metrics
are read back from the donefile; beside them, on the same rows,

- **const**: the constant predictor at the running CTR (the CTR of all earlier hours);
- **LR**: river's ``linear_model.LogisticRegression`` (defaults) on the same features one-hot,
  kept across hours: each hour is scored whole with the model of the previous hour, then learned;
- **Bayes**: the AUC of the planted probabilities (``gen-data``'s ``_bayes.json``).

Streams: ``gen50k`` (gen-data, 50k rows/hour), ``gen500`` (gen-data, 500 rows/hour, 200 hours),
``rare`` (gen-data with the planted intercept at -6.3: CTR ~0.4 %, 20k rows/hour) and ``ml100k``
(MovieLens-100K, real ratings from the ``recbole`` wheel on PyPI: label = rating >= 4; slots user,
item, genres, age decade, gender, occupation; one real day = one data hour, days without ratings
left out, so its ~213 hours keep the log's own order and burstiness).

Metrics "after the first hour" pool hours 2..N (the constant predictor has no earlier CTR in hour
1; hour 1 is shown on its own). Targets: streamtrain's mean per-hour AUC >= LR's; its pooled
logloss < const's; no hour worse than const by more than 0.05.

Probes (what explains a bad start): ``--set SECTION.KEY=VALUE`` overrides any config key, e.g.
``--set network.learning_rate=0.01`` or ``--set table.optimizer.show_scale=false``.

Run: ``.venv/bin/python bench/quality_bench.py [--streams gen500,ml100k] [--hours 24]
[--json out.json]``. Files go to ``var/bench/quality/`` (removed unless ``--keep``).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.hours import hour_index, hour_str, partition_relpath  # noqa: E402
from trainer.jsonsafe import strict_dumps  # noqa: E402
from trainer.metrics import ProgressiveMetrics  # noqa: E402
from trainer.store import read_donefile  # noqa: E402

START = "2026-01-01T00"
GEN_SLOTS = ("user_id", "item_id", "category", "tags")
GEN_DENSE = ("d0", "d1", "d2")
ML_SLOTS = ("user", "item", "genres", "age", "gender", "occupation")
RECBOLE = "recbole==1.2.1"  # ships recbole/dataset_example/ml-100k/ in its wheel
ML_PREFIX = "recbole/dataset_example/ml-100k/ml-100k"
RARE_BIAS = -6.3


@dataclass
class Stream:
    name: str
    slots: tuple
    dense: tuple
    hours: int
    rows_per_hour: int = 0  # gen-data streams
    bias: float | None = None
    planted: bool = True


STREAMS = {
    "gen50k": Stream("gen50k", GEN_SLOTS, GEN_DENSE, hours=24, rows_per_hour=50_000),
    "gen500": Stream("gen500", GEN_SLOTS, GEN_DENSE, hours=200, rows_per_hour=500),
    "rare": Stream("rare", GEN_SLOTS, GEN_DENSE, hours=24, rows_per_hour=20_000, bias=RARE_BIAS),
    "ml100k": Stream("ml100k", ML_SLOTS, (), hours=213, planted=False),
}


# ----------------------------------------------------------------------------- writing streams


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_config(path: Path, stream: Stream, data: Path, model: Path, overrides: dict) -> Path:
    """A config with the documented defaults: only columns, paths and 1 server + 1 worker."""
    sections = {"columns": {"slots": list(stream.slots), "dense": list(stream.dense)},
                "mpi": {"servers": 1, "workers": 1}}
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        sections.setdefault(section, {})[name] = value
    lines = [f"name = {_toml_value('qb-' + stream.name)}", f"data_root = {_toml_value(data)}",
             f"model_dir = {_toml_value(model)}"]
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


CODE = REPO  # the tree whose ``trainer`` runs (``--code``: e.g. a checkout of main, for A/B)


def streamtrain(*args) -> str:
    """Run the real command line; raise with its last lines on failure."""
    proc = subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True,
                          text=True, cwd=CODE)
    if proc.returncode:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise RuntimeError(f"streamtrain {' '.join(args)} exited {proc.returncode}:\n"
                           + "\n".join(tail))
    return proc.stdout


def write_stream(stream: Stream, config: Path, data: Path, hours: int, wheel: str | None) -> int:
    """Write the stream's partitions; returns the number of hours written."""
    if stream.name == "ml100k":
        return write_movielens(data, hours, wheel)
    extra = ["--bias", str(stream.bias)] if stream.bias is not None else []
    streamtrain("gen-data", "--config", str(config), "--start", START, "--hours", str(hours),
                "--rows-per-hour", str(stream.rows_per_hour), *extra)
    return hours


def movielens_wheel(wheel: str | None) -> Path:
    """The recbole wheel (which ships MovieLens-100K): ``--movielens-wheel``, or fetched once
    from PyPI by pip (no dependencies, nothing installed) into ``var/bench/wheels``."""
    if wheel:
        return Path(wheel)
    folder = REPO / "var" / "bench" / "wheels"
    found = sorted(folder.glob("recbole-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", RECBOLE,
                        "-d", str(folder)], check=True)
        found = sorted(folder.glob("recbole-*.whl"))
    return found[-1]


def _atomic_table(z: zipfile.ZipFile, suffix: str) -> list[list[str]]:
    text = z.read(ML_PREFIX + suffix).decode("latin-1")
    return [line.split("\t") for line in text.splitlines()[1:] if line]


def movielens_rows(wheel: Path) -> dict[str, np.ndarray | list]:
    """MovieLens-100K ratings in time order as columns (label, ids, timestamp)."""
    with zipfile.ZipFile(wheel) as z:
        inter = _atomic_table(z, ".inter")
        items = {r[0]: r[3].split() for r in _atomic_table(z, ".item")}
        users = {r[0]: r for r in _atomic_table(z, ".user")}
    genres = {g: i for i, g in enumerate(sorted({g for gs in items.values() for g in gs}))}
    occupations = {o: i for i, o in enumerate(sorted({u[3] for u in users.values()}))}
    inter.sort(key=lambda r: int(float(r[3])))  # stable: ties keep the file's order
    ts = np.array([int(float(r[3])) for r in inter], np.int64)
    return {
        "label": np.array([1 if float(r[2]) >= 4 else 0 for r in inter], np.int64),
        "user": np.array([int(r[0]) for r in inter], np.int64),
        "item": np.array([int(r[1]) for r in inter], np.int64),
        "genres": [[genres[g] for g in items.get(r[1], [])] for r in inter],
        "age": np.array([int(users[r[0]][1]) // 10 for r in inter], np.int64),
        "gender": np.array([0 if users[r[0]][2] == "M" else 1 for r in inter], np.int64),
        "occupation": np.array([occupations[users[r[0]][3]] for r in inter], np.int64),
        "timestamp": ts,
    }


def write_movielens(data: Path, hours: int, wheel: str | None) -> int:
    """One real day (UTC) = one data hour from :data:`START`; days without ratings are left out."""
    cols = movielens_rows(movielens_wheel(wheel))
    day = (cols["timestamp"] - cols["timestamp"][0] // 86400 * 86400) // 86400
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    ends = np.r_[starts[1:], day.size]
    first = hour_index(START)
    for h, (lo, hi) in enumerate(zip(starts[:hours], ends[:hours])):
        table = pa.table({
            "label": cols["label"][lo:hi],
            **{k: cols[k][lo:hi] for k in ("user", "item", "age", "gender", "occupation")},
            "genres": pa.array(cols["genres"][lo:hi], pa.list_(pa.int64())),
        })
        folder = data / partition_relpath(first + h)
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "part-00000.parquet")
        (folder / "_SUCCESS").touch()
    return min(hours, starts.size)


# ----------------------------------------------------------------------------- reading hours


def read_hour(data: Path, hour: int) -> tuple[pa.Table, dict]:
    folder = data / partition_relpath(hour)
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(("_", ".")))
    bayes = folder / "_bayes.json"
    info = json.loads(bayes.read_text()) if bayes.exists() else {}
    return pa.concat_tables(pq.read_table(f) for f in files), info


def feature_dicts(table: pa.Table, slots, dense) -> list[dict]:
    """One river feature dict per row: ``slot=id`` one-hot (lists: one per id), dense values."""
    n = table.num_rows
    rows = [dict() for _ in range(n)]
    for slot in slots:
        for x, v in zip(rows, table.column(slot).to_pylist()):
            for i in (v if isinstance(v, list) else () if v is None else (v,)):
                x[f"{slot}={i}"] = 1.0
    for name in dense:
        for x, v in zip(rows, table.column(name).to_pylist()):
            x[name] = 0.0 if v is None else float(v)
    return rows


@dataclass
class Series:
    """Per-hour numbers of one predictor."""

    auc: list = field(default_factory=list)
    logloss: list = field(default_factory=list)
    shows: list = field(default_factory=list)
    clicks: list = field(default_factory=list)
    pred_sum: list = field(default_factory=list)

    def add(self, metrics: dict) -> None:
        self.auc.append(metrics["auc"])
        self.logloss.append(metrics["logloss"])
        self.shows.append(metrics["shows"])
        self.clicks.append(metrics["clicks"])
        self.pred_sum.append(metrics["pred_ctr"] * metrics["shows"])

    def scored(self, labels: np.ndarray, preds: np.ndarray) -> None:
        m = ProgressiveMetrics(1 << 16)
        m.update(labels, preds)
        self.add(m.get())

    def summary(self, skip: int = 1) -> dict:
        """Mean per-hour AUC, pooled logloss and COPC over hours ``skip + 1 ..``."""
        sl = slice(skip, None)
        aucs = [a for a in self.auc[sl] if a is not None and math.isfinite(a)]
        shows = sum(self.shows[sl])
        return {"auc": statistics.fmean(aucs) if aucs else None,
                "logloss": sum(ll * s for ll, s in zip(self.logloss[sl], self.shows[sl])) / shows,
                "copc": sum(self.clicks[sl]) / max(sum(self.pred_sum[sl]), 1e-12)}


def constant_logloss(labels: np.ndarray, ctr: float) -> float:
    p = min(max(ctr, 1e-7), 1 - 1e-7)
    return float(-(labels * math.log(p) + (1 - labels) * math.log1p(-p)).mean())


# ----------------------------------------------------------------------------- one stream


def run_stream(stream: Stream, work: Path, hours: int, overrides: dict, wheel: str | None,
               river_lr: bool = True) -> dict:
    data, model = work / stream.name / "data", work / stream.name / "model"
    shutil.rmtree(work / stream.name, ignore_errors=True)
    data.mkdir(parents=True)
    config = write_config(work / stream.name / "config.toml", stream, data, model, overrides)
    hours = write_stream(stream, config, data, hours, wheel)

    from river import linear_model

    lr = linear_model.LogisticRegression()
    st, base, const = Series(), Series(), []
    bayes, seconds, rows, clicks_seen, shows_seen = [], [], [], 0.0, 0.0
    first = hour_index(START)
    for h in range(first, first + hours):
        started = time.perf_counter()
        streamtrain("run-hour", "--config", str(config), "--hour", hour_str(h))
        seconds.append(time.perf_counter() - started)
        table, info = read_hour(data, h)
        labels = np.asarray(table.column("label").to_numpy(), np.float64)
        rows.append(len(labels))
        if info:
            bayes.append(info["bayes_auc"])
        const.append(constant_logloss(labels, clicks_seen / shows_seen) if shows_seen else None)
        clicks_seen += labels.sum()
        shows_seen += labels.size
        if river_lr:
            xs = feature_dicts(table, stream.slots, stream.dense)
            base.scored(labels, np.array([lr.predict_proba_one(x).get(True, 0.5) for x in xs]))
            for x, y in zip(xs, labels):
                lr.learn_one(x, bool(y))
    published = {d["hour"]: d["metrics"] for d in read_donefile(model)}
    for h in range(first, first + hours):
        st.add(published[h])
    return report(stream, hours, rows, st, base if river_lr else None, const, bayes, seconds)


def report(stream, hours, rows, st: Series, base: Series | None, const, bayes, seconds) -> dict:
    shows = st.shows[1:]
    const_ll = sum(c * s for c, s in zip(const[1:], shows)) / sum(shows)
    diffs = [a - c for a, c in zip(st.logloss[1:], const[1:])]
    out = {
        "stream": stream.name, "hours": hours, "rows_per_hour": statistics.fmean(rows),
        "ctr": sum(st.clicks) / sum(st.shows),
        "bayes_auc": statistics.fmean(bayes) if bayes else None,
        "streamtrain": st.summary(), "const": {"logloss": const_ll},
        "worst_hour_minus_const": max(diffs) if diffs else None,
        "first_hour": {"auc": st.auc[0], "logloss": st.logloss[0],
                       "pred_ctr": st.pred_sum[0] / st.shows[0],
                       "actual_ctr": st.clicks[0] / st.shows[0]},
        "seconds_per_hour_median": statistics.median(seconds),
        "per_hour": {"streamtrain_auc": st.auc, "streamtrain_logloss": st.logloss,
                     "streamtrain_pred_ctr": [p / s for p, s in zip(st.pred_sum, st.shows)],
                     "actual_ctr": [c / s for c, s in zip(st.clicks, st.shows)],
                     "shows": st.shows,
                     "const_logloss": const},
    }
    if base is not None:
        out["lr"] = base.summary()
        out["per_hour"].update(lr_auc=base.auc, lr_logloss=base.logloss)
    return out


# ----------------------------------------------------------------------------- the table


def _f(v, fmt=".4f") -> str:
    return "-" if v is None else format(v, fmt)


def format_table(results: list[dict]) -> str:
    head = ("| stream | rows/h | hours | CTR | Bayes AUC | AUC st | AUC LR | logloss st | "
            "logloss LR | logloss const | worst h − const | COPC st | COPC LR | hour 1: logloss,"
            " pred/actual CTR | targets |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in results:
        st, lr = r["streamtrain"], r.get("lr") or {}
        ok = [st["logloss"] < r["const"]["logloss"],
              r["worst_hour_minus_const"] is not None and r["worst_hour_minus_const"] <= 0.05]
        if lr:
            ok.insert(0, st["auc"] is not None and lr.get("auc") is not None
                      and st["auc"] >= lr["auc"])
        f1 = r["first_hour"]
        lines.append(
            f"| {r['stream']} | {r['rows_per_hour']:,.0f} | {r['hours']} | {r['ctr']:.4f} | "
            f"{_f(r['bayes_auc'])} | {_f(st['auc'])} | {_f(lr.get('auc'))} | {st['logloss']:.4f} | "
            f"{_f(lr.get('logloss'))} | {r['const']['logloss']:.4f} | "
            f"{_f(r['worst_hour_minus_const'], '+.4f')} | {st['copc']:.3f} | "
            f"{_f(lr.get('copc'), '.3f')} | {f1['logloss']:.3f}, {f1['pred_ctr']:.3f}/"
            f"{f1['actual_ctr']:.3f} | {'pass' if all(ok) else 'FAIL'} |")
    return "\n".join(lines)


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set {item!r}: expected section.key=value")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default=",".join(STREAMS), help="comma-separated: " + ", ".join(STREAMS))
    ap.add_argument("--hours", type=int, default=None, help="cap every stream at this many hours")
    ap.add_argument("--rows-scale", type=float, default=1.0,
                    help="multiply gen-data rows/hour (smoke tests use a small value)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="config override for a probe (value parsed as JSON when it parses)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the river baseline")
    ap.add_argument("--movielens-wheel", default=None, help="path to a recbole wheel")
    ap.add_argument("--code", default=str(REPO),
                    help="run this tree's trainer (a checkout with its built pstable), e.g. main")
    ap.add_argument("--work", default=str(REPO / "var" / "bench" / "quality"))
    ap.add_argument("--json", default=None, help="write every number (per hour too) here")
    ap.add_argument("--keep", action="store_true", help="keep the data and models")
    args = ap.parse_args(argv)
    global CODE
    CODE = Path(args.code).resolve()
    overrides = parse_sets(args.set)
    work = Path(args.work).resolve()  # the config names its paths; relative ones would be read from its folder
    results = []
    for name in args.streams.split(","):
        stream = STREAMS[name]
        if stream.rows_per_hour:
            stream = Stream(**{**stream.__dict__,
                               "rows_per_hour": max(50, int(stream.rows_per_hour * args.rows_scale))})
        hours = min(stream.hours, args.hours or stream.hours)
        started = time.perf_counter()
        results.append(run_stream(stream, work, hours, overrides, args.movielens_wheel, river_lr=not args.no_baseline))
        print(f"# {name}: {hours} hours in {time.perf_counter() - started:.0f} s "
              f"(run-hour median {results[-1]['seconds_per_hour_median']:.2f} s)", flush=True)
    print(f"# overrides {overrides or 'none'}")
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(strict_dumps(results, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
