"""The zoo's networks on one planted gen-data stream: examples/s and progressive AUC, beside the
Bayes AUC.

The stream (``trainer/gendata.py``) has the default planted model plus pairwise interactions
(``item_id × category``, ``category × tags``) and a sequence effect (a ``history`` of item ids,
the best match with the shown item drives the click); ``history`` is a sequence slot sharing its
table with ``item_id``. Each model trains the same hours from scratch with the real job
(``streamtrain run-hour``: ``mpiexec``, 1 server + 1 worker, so runs are deterministic), with
``[network] model = "<name>"`` and its ``[network.options]``. Printed per model: the median
examples/s of the training phase over the hours, the progressive AUC of the last hour and the mean
over all hours (every batch is scored before it is learnt from), and the Bayes AUC of the same
hours (the planted probabilities: the ceiling).

    .venv/bin/python bench/models_bench.py                 # 6 hours of 20k rows
    .venv/bin/python bench/models_bench.py --quick         # 2 hours of 5k rows
    .venv/bin/python bench/models_bench.py --models dnn din
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.config import ColumnsConfig  # noqa: E402
from trainer.gendata import Planted, generate_hours  # noqa: E402
from trainer.hours import hour_index, hour_str  # noqa: E402

START = hour_index("2026-11-26T00")
SLOTS = ["user_id", "item_id", "category", "tags", "history"]
PLANTED = Planted(interactions=(("item_id", "category", 2.0), ("category", "tags", 1.0)),
                  sequence=("history", "item_id", 1.5), history_len=10)

#: zoo name -> [network.options]
MODELS = {
    "dnn": {"hidden": [64, 32]},
    "wide_deep": {"hidden": [64, 32]},
    "deepfm": {"hidden": [64, 32]},
    "dcn_v2": {"cross_layers": 2, "hidden": [64, 32]},
    "din": {"target": "item_id", "sequence": "history", "hidden": [64, 32]},
}

CONFIG = """
name = "zoo-{model}"
data_root = "{root}/data"
model_dir = "{root}/model-{model}"
[columns]
slots = {slots}
dense = ["d0", "d1", "d2"]
sequences = {{ history = 10 }}
shared_tables = {{ items = ["item_id", "history"] }}
[table]
dim = 8
num_shards = 2
[table.optimizer]
rule = "adagrad"
learning_rate = 0.05
[table.admission]
policy = "none"
[network]
model = "{model}"
optimizer = "adam"
learning_rate = 0.001
[network.options]
{options}
[train]
batch_size = 512
progress_seconds = 1000.0
[mpi]
servers = 1
workers = 1
"""


def make_stream(root: Path, hours: int, rows: int, seed: int = 11,
                planted: Planted = PLANTED) -> list[dict]:
    """Write (or reuse) the planted stream under ``root/data``; returns gen-data's report per hour
    (with its Bayes AUC). ``planted`` needs a sequence on ``history`` (strength 0 is fine): the
    config declares it a sequence slot."""
    columns = ColumnsConfig(slots=tuple(SLOTS), dense=("d0", "d1", "d2"))  # those of CONFIG
    return generate_hours(columns, str(root / "data"), START, hours, rows, seed, planted=planted)


def write_config(root: Path, model: str, options: dict) -> Path:
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in options.items())
    path = root / f"zoo-{model}.toml"
    path.write_text(CONFIG.format(root=root, model=model, slots=json.dumps(SLOTS), options=lines))
    return path


def run_model(root: Path, model: str, options: dict, hours: int) -> list[dict]:
    """Train ``hours`` hours from scratch through the CLI; the job's result of each hour."""
    config = write_config(root, model, options)
    shutil.rmtree(root / f"model-{model}", ignore_errors=True)
    results = []
    for h in range(START, START + hours):
        proc = subprocess.run([sys.executable, "-m", "trainer", "run-hour", "--config", str(config),
                               "--hour", hour_str(h)], cwd=REPO, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{model}, hour {hour_str(h)} failed:\n{proc.stdout[-2000:]}\n"
                             f"{proc.stderr[-2000:]}")
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("[streamtrain] result "))
        results.append(json.loads(line[len("[streamtrain] result "):]))
    return results


def summarise(results: list[dict]) -> dict:
    """examples/s (median over hours), last hour's AUC, mean hourly AUC (hours of equal rows)."""
    return {"examples_per_s": statistics.median(r["rows_per_s"] for r in results),
            "auc_last": results[-1]["auc"], "auc_mean": statistics.fmean(r["auc"] for r in results)}


def format_table(rows: dict[str, dict], stream: list[dict]) -> str:
    """One line per model, then the Bayes AUC of the same hours."""
    bayes_last, bayes_mean = stream[-1]["bayes_auc"], statistics.fmean(h["bayes_auc"] for h in stream)
    out = [f"{'model':10} {'examples/s':>11} {'AUC last hour':>14} {'AUC mean':>9} {'of Bayes lift':>13}"]
    for model, r in rows.items():
        closed = (r["auc_last"] - 0.5) / max(bayes_last - 0.5, 1e-9)
        out.append(f"{model:10} {r['examples_per_s']:11,.0f} {r['auc_last']:14.4f} {r['auc_mean']:9.4f} "
                   f"{closed:13.0%}")
    out.append(f"{'Bayes':10} {'':>11} {bayes_last:14.4f} {bayes_mean:9.4f} {'100%':>13}")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=6)
    parser.add_argument("--rows-per-hour", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2 hours of 5k rows")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--root", default=str(REPO / "var" / "bench" / "models"))
    args = parser.parse_args(argv)
    if args.quick:
        args.hours, args.rows_per_hour = 2, 5_000
    root = Path(args.root).resolve() / f"{args.hours}x{args.rows_per_hour}"
    root.mkdir(parents=True, exist_ok=True)
    stream = make_stream(root, args.hours, args.rows_per_hour)
    print(f"models_bench: {args.hours} hour(s) x {args.rows_per_hour} rows, slots {', '.join(SLOTS)} "
          f"(history: sequence of 10), dim 8, batch 512, 1 server + 1 worker, {os.cpu_count()} cores; "
          f"planted: {PLANTED}")
    rows = {m: summarise(run_model(root, m, MODELS[m], args.hours)) for m in args.models}
    print(format_table(rows, stream))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
