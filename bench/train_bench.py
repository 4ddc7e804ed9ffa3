"""Training throughput of the MPI job against the dense-only bound, measured in one run.

The model is the classic Criteo-shaped CTR-DNN: 26 sparse slots (Zipf ids over large id spaces),
13 dense features, dim 8, MLP 400-400-400, batch 512, adagrad sparse rule.

Printed, in one run: the **dense-only bound**, the JAX step (the worker's: pooling, the jitted
forward/backward, unpooling) + the dense update (the server's) in one process on the partition's
batches already in memory, with random rows instead of a table (no communication, no table, no
reading), one thread; beside it the numpy step with hand-written backward it replaced, loaded
from git (``bench/dense_ab.py``), on the same batches, interleaved. Then, per layout (1 server +
1 worker, 1 server + 2 workers), examples/s of the training phase of a real ``mpiexec`` job
(reading Parquet, pulls, pushes, server-side updates included) as a share of the bound measured
just before it (bound and jobs take turns, ``--repeats`` rounds); the
job's network set-up (worker: JAX import, network check, compile; overlapped with rank 0's
planning) and the per-hour fixed cost JAX adds, measured alone in fresh processes with the
compilation cache warm. Each number is the median of ``--repeats`` runs.

    .venv/bin/python bench/train_bench.py            # 200k rows per run
    .venv/bin/python bench/train_bench.py --quick    # 40k rows, 1 repeat
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dense_ab  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.hours import hour_index, partition_relpath  # noqa: E402

SLOTS = [f"c{i}" for i in range(26)]
DENSE = [f"i{i}" for i in range(13)]
HOUR = hour_index("2026-11-26T00")
LAYOUTS = ((1, 1), (1, 2))  # (servers, workers)

CONFIG = """
name = "bench"
data_root = "{root}/data"
model_dir = "{root}/model-{tag}"
[columns]
label = "label"
slots = {slots}
dense = {dense}
[table]
dim = 8
num_shards = 8
[table.optimizer]
rule = "adagrad"
learning_rate = 0.05
[table.admission]
policy = "none"
[network]
model = "dnn"
optimizer = "adam"
learning_rate = 0.0005
compile_cache = "{root}/jax_cache"
[network.options]
hidden = [400, 400, 400]
[train]
batch_size = 512
progress_seconds = 1000.0
[mpi]
servers = {servers}
workers = {workers}
blas_threads = {blas}
"""


def make_data(root: Path, rows: int) -> None:
    part = root / "data" / partition_relpath(HOUR)
    if (part / "_SUCCESS").exists() and json.loads((part / "_rows.json").read_text()) == rows:
        return
    part.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = 4
    for f in range(files):
        n = rows // files
        columns = {}
        logit = np.zeros(n)
        for s, name in enumerate(SLOTS):
            space = 10 ** (3 + s % 6)  # 1e3 .. 1e8 distinct ids
            ids = (rng.zipf(1.2, n) % space).astype(np.uint64)
            logit += ((ids * np.uint64(2654435761 + s)) % np.uint64(97)).astype(float) / 97 - 0.5
            columns[name] = (ids * np.uint64(0x9E3779B97F4A7C15)).view(np.int64)
        dense = rng.normal(size=(n, len(DENSE)))
        logit += dense[:, :3].sum(axis=1) * 0.3 - 1.5
        columns["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        for j, name in enumerate(DENSE):
            columns[name] = dense[:, j]
        pq.write_table(pa.table(columns), part / f"part-{f}.parquet", row_group_size=10_000)
    (part / "_rows.json").write_text(json.dumps(rows))
    (part / "_SUCCESS").touch()


def write_config(root: Path, servers: int, workers: int, blas: int = 1) -> Path:
    tag = f"{servers}s{workers}w{blas}t"
    path = root / f"bench-{tag}.toml"
    path.write_text(CONFIG.format(root=root, tag=tag, slots=json.dumps(SLOTS),
                                  dense=json.dumps(DENSE), servers=servers, workers=workers,
                                  blas=blas))
    return path


def mpi_run(root: Path, servers: int, workers: int, blas: int = 1) -> dict:
    config = write_config(root, servers, workers, blas)
    cfg = load_config(config)
    subprocess.run(["rm", "-rf", cfg.model_dir], check=True)
    command = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(servers + workers),
               sys.executable, "-m", "trainer", "train", "--config", str(config),
               "--hour", "2026-11-26T00"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"job failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("[streamtrain] result "))
    return json.loads(line[len("[streamtrain] result "):])


def partition_batches(root: Path) -> list:
    """The partition's batches in memory, with random rows instead of a table's."""
    from trainer import partition
    from trainer.reader import BatchReader, dedup

    cfg = load_config(write_config(root, 1, 1))
    part = partition.locate(cfg.data_root, HOUR)
    files, _ = partition.check_schema(part, partition.list_files(part, checksums=False),
                                      cfg.columns)
    units = partition.assign_work(files, 1)[0]
    rng = np.random.default_rng(0)
    data = []
    for batch in BatchReader(units, cfg.columns, cfg.train.batch_size, filesystem=part.fs):
        features = dedup(batch)
        rows = rng.normal(0, 0.01, (len(features.keys), cfg.table.dim + 1)).astype(np.float32)
        data.append((batch, features, rows))
    return data


def dense_only(root: Path, data: list, blas: int = 1) -> dict:
    """Examples/s of the numpy and the JAX dense steps alone (one turn each, after a warm-up),
    with a worker rank's BLAS thread count."""
    with threadpool_limits(limits=blas, user_api="blas"):
        return dense_ab.measure(dense_ab.NUMPY_REV, 0, 1, str(root / "jax_cache"), data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="40k rows, 1 repeat")
    parser.add_argument("--root", default=str(REPO / "var" / "bench" / "train"))
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeats = 40_000, 1
    root = Path(args.root).resolve()
    make_data(root, args.rows)
    print(f"train_bench: {args.rows} rows, 26 slots, 13 dense, dim 8, MLP 400-400-400, batch 512, "
          f"{args.repeats} repeat(s), {dense_ab.machine()}; medians")
    # The bound is measured again before each round of jobs, and each job is compared with the
    # bound of its own round: the machine is shared, and its speed moves between minutes.
    data, rounds = partition_batches(root), []
    for _ in range(args.repeats):
        bound = dense_only(root, data)
        jobs = {layout: mpi_run(root, *layout) for layout in LAYOUTS}
        rounds.append((bound, jobs))
    for i, (b, jobs) in enumerate(rounds):
        print(f"round {i + 1}: bound {b['jax']:,.0f}, numpy {b['numpy']:,.0f}, jobs " + ", ".join(
            f"{s}+{w} {jobs[s, w]['rows_per_s']:,.0f} ({jobs[s, w]['rows_per_s'] / b['jax']:.0%})"
            for s, w in LAYOUTS) + " examples/s")
    bounds = [b for b, _ in rounds]
    bound = statistics.median(b["jax"] for b in bounds)
    print(f"{'layout':24} {'examples/s':>12} {'of bound':>9}")
    print(f"{'numpy dense step':24} {statistics.median(b['numpy'] for b in bounds):12,.0f} "
          f"{statistics.median(b['numpy'] / b['jax'] for b in bounds):9.0%}  "
          f"(trainer/model.py at {dense_ab.NUMPY_REV[:10]})")
    print(f"{'dense-only bound':24} {bound:12,.0f} {'100%':>9}  (JAX step: "
          f"{statistics.median(b['ratio'] for b in bounds):.2f}x numpy; per CPU-second "
          f"{statistics.median(b['ratio_cpu'] for b in bounds):.2f}x; target >= 1.2x)")
    for layout in LAYOUTS:
        speeds = [(jobs[layout]["rows_per_s"], b["jax"]) for b, jobs in rounds]
        target = "  (target >= 85%)" if layout == (1, 1) else ""
        print(f"{f'{layout[0]} server + {layout[1]} worker(s)':24} "
              f"{statistics.median(s for s, _ in speeds):12,.0f} "
              f"{statistics.median(s / b for s, b in speeds):9.0%}{target}")
    setup = [jobs[layout]["seconds"]["network"] for _, jobs in rounds for layout in LAYOUTS]
    print(f"load average now {os.getloadavg()[0]:.1f}")
    dense_ab.print_fixed_cost(dense_ab.fixed_cost(str(root / "jax_cache"), args.repeats))
    print(f"job's network set-up on the worker (overlaps planning): "
          f"{statistics.median(setup):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
