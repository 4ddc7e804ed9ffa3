"""A/B of pstable builds in one process: push and pull timed interleaved on identical tables.

On a shared or virtual machine absolute speeds drift between runs (10-20 % here, more after big
allocations), so comparing two versions of the table from two bench runs is unreliable. This
builds ``pstable/_table.pyx`` of each given git revision (``.`` = the working tree) into a
temporary folder, loads every build into this process, fills one table per build with the same
rows, then times the builds' pushes and pulls of the same batches in turn, and prints medians
and each build's time relative to the first.

Usage::

    .venv/bin/python bench/pstable_ab.py --rev HEAD~1 --rev .            # dim 8, 1e7 rows
    .venv/bin/python bench/pstable_ab.py --rev main --rev . --rows 1000000 --dim 64
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pstable import AdmissionConfig, OptimizerConfig, TableConfig  # noqa: E402
from pstable_bench import push_new_keys, shuffled, zipf_indices  # noqa: E402


def build(rev: str, into: Path):
    """The ``pstable._table`` extension of git revision ``rev`` (``.``: the working tree)."""
    into.mkdir(parents=True)
    if rev == ".":
        shutil.copytree(ROOT / "pstable", into / "pstable")
        shutil.copy(ROOT / "setup.py", into / "setup.py")
    else:
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "pstable", "setup.py"],
                             check=True, capture_output=True).stdout
        with tarfile.open(fileobj=BytesIO(tar)) as t:
            t.extractall(into, filter="data")
    for stale in [*(into / "pstable").glob("_table*.so"), *(into / "pstable").glob("_table.c")]:
        stale.unlink()
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=into,
                   check=True, capture_output=True)
    so = next((into / "pstable").glob("_table*.so"))
    spec = importlib.util.spec_from_file_location("pstable._table", so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def filled_table(module, cfg, keys, batch, layout, seed):
    t = push_new_keys(module.SparseTable(cfg), keys, batch)
    return shuffled(t, np.random.default_rng(seed)) if layout == "shuffled" else t


def run(args):
    rng = np.random.default_rng(args.seed)
    cfg = TableConfig(dim=args.dim, optimizer=OptimizerConfig(rule="adagrad"),
                      admission=AdmissionConfig(policy="none"), seed=1)
    keys = rng.integers(0, 2**64 - 1, args.rows, dtype=np.uint64, endpoint=True)
    with tempfile.TemporaryDirectory(prefix="pstable-ab-") as tmp:
        modules = {rev: build(rev, Path(tmp) / f"build{i}") for i, rev in enumerate(args.rev)}
        tables = {rev: filled_table(m, cfg, keys, args.batch, args.layout, args.seed)
                  for rev, m in modules.items()}
        width = cfg.dim + 1
        grads = (rng.standard_normal((args.batch, width)) * 0.01).astype(np.float32)
        shows = np.ones(args.batch, np.float32)
        clicks = np.zeros(args.batch, np.float32)
        out = np.empty((args.batch, width), np.float32)
        print(f"# {args.rows:,} rows, dim {args.dim}, batches of {args.batch:,} keys, "
              f"{args.repeats} interleaved rounds, layout {args.layout}, medians (wall clock)")
        for dist in ("uniform", "zipf"):
            idx = (rng.integers(0, args.rows, args.batch) if dist == "uniform"
                   else zipf_indices(rng, args.rows, args.batch, args.zipf_a))
            q = keys[idx]
            push = {rev: [] for rev in tables}
            pull = {rev: [] for rev in tables}
            for hour in range(1, args.repeats + 1):
                for rev, t in tables.items():
                    t0 = time.perf_counter()
                    t.push(q, None, shows, clicks, grads, hour)
                    push[rev].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    t.pull(q, out=out)
                    pull[rev].append(time.perf_counter() - t0)
            first = args.rev[0]
            for rev in tables:
                tp, tl = statistics.median(push[rev]), statistics.median(pull[rev])
                print(f"{dist:>7} {rev:>12}: push {tp * 1e3:7.1f} ms ({args.batch / tp / 1e6:5.2f} M/s, "
                      f"{tp / statistics.median(push[first]):4.2f}x)   pull {tl * 1e3:7.1f} ms "
                      f"({args.batch / tl / 1e6:5.2f} M/s, {tl / statistics.median(pull[first]):4.2f}x)",
                      flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rev", action="append", required=True,
                   help="a git revision to build, or . for the working tree (repeat; first = baseline)")
    p.add_argument("--rows", type=int, default=10**7)
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--batch", type=int, default=10**6)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--zipf-a", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=["pushed", "shuffled"], default="pushed",
                   help="row order of the tables (see bench/pstable_bench.py)")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
