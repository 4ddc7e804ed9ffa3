"""Benchmark of pstable.SparseTable: batched pull and push (adagrad) in keys per second.

For each embedding dim and table size it prints, from one run (the machine is shared, so compare
ratios within a run rather than absolute numbers):

* pull and push keys/s for uniform and Zipf keys (batches of ``--batch`` keys, median of
  ``--repeats`` runs);
* a Python ``dict`` baseline doing the same mapping (key -> row, then numpy gather; for push the
  value checks, duplicate merge, show / click / last-seen / changed-mark updates and adagrad on
  the unique rows, as the table's push does to existing rows), timed on the same batch
  (``--dict-sample`` for a prefix: a prefix of a Zipf batch has fewer duplicates, which would
  slow the baseline per key and flatter the ratios);
* the machine's random-access bound: ``np.take`` of the same rows from a float32 slab of the same
  size, written first (no hashing; numpy advises such big arrays as huge pages, like the table);
* bytes per row (table allocation without the push scratch) next to the raw row payload.

The table is built by pushing ``--batch`` new keys at a time, which leaves each batch's rows in
hash order; push applies in hash order, so on such a table it walks rows nearly in order.
``--layout shuffled`` reloads the rows in random order first (a table served for long: rows from
many small pushes and loads); push is markedly slower there (see docs/benchmarks.md).

Times are CPU seconds of this process (``--wall`` for wall-clock), medians of ``--repeats``.

Usage::

    .venv/bin/python bench/pstable_bench.py            # dims 8 and 64, 1e5 / 1e6 / 1e7 rows
    .venv/bin/python bench/pstable_bench.py --quick    # dim 8, 1e5 and 1e6 rows, 3 repeats
    .venv/bin/python bench/pstable_bench.py --dims 8 --sizes 10000000
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # no idle BLAS threads competing for the 2 cores

import numpy as np  # noqa: E402

from pstable import AdmissionConfig, OptimizerConfig, SparseTable, TableConfig  # noqa: E402

CLOCK = time.process_time  # CPU seconds of this process: immune to being descheduled on a shared box


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return statistics.median(times)


def zipf_indices(rng, n_rows, n, a):
    r = rng.zipf(a, n).astype(np.int64) - 1
    return r % n_rows


def push_new_keys(table, keys, batch):
    """Create a row for every key by pushing ``batch`` keys at a time (zero gradients, hour 0)."""
    width = table.config.dim + 1
    for lo in range(0, len(keys), batch):
        k = keys[lo:lo + batch]
        table.push(k, None, np.ones(len(k), np.float32), np.zeros(len(k), np.float32),
                   np.zeros((len(k), width), np.float32), 0)
    return table


def shuffled(table, rng):
    """A table with the rows of ``table`` in random slab order (the caller drops ``table``).

    Push creates a batch's new rows in hash order, so a table built from a few big batches holds
    long hash-sorted runs, and a push, which applies in hash order, then walks its rows nearly in
    order: faster than on a served table, whose rows came from thousands of small pushes and
    loads and lie in no order related to the hash. Export, permute, load gives that layout.
    """
    cols = table.export()
    order = rng.permutation(len(cols["key"]))
    cols = {name: a[order] for name, a in cols.items()}
    fresh = type(table)(table.config)
    fresh.reserve(len(order))
    fresh.load(cols)
    fresh.mark_saved()
    return fresh


class DictBaseline:
    """Same mapping in Python: dict key -> row index, numpy columns of the rows' state.

    Push does what the table's push does to existing rows: checks the values, merges duplicate
    keys (sums in batch order), adds shows and clicks, sets the last-seen hour and the changed
    mark, and runs adagrad on the merged gradients divided by their shows (at least 1: the
    table's default ``show_scale``).
    """

    def __init__(self, keys, width):
        self.index = {k: i for i, k in enumerate(keys.tolist())}
        # np.full writes every page (np.zeros would leave them on the kernel's zero page)
        self.w = np.full((len(keys), width), 0.01, np.float32)
        self.g2 = np.full((len(keys), 2), 0.0, np.float32)
        self.show = np.full(len(keys), 1.0, np.float32)
        self.click = np.full(len(keys), 0.0, np.float32)
        self.last_seen = np.full(len(keys), 0, np.int32)
        self.changed = np.full(len(keys), False)

    def rows_of(self, keys):
        get = self.index.get
        return np.fromiter((get(k, -1) for k in keys.tolist()), np.int64, len(keys))

    def pull(self, keys):
        idx = self.rows_of(keys)
        out = self.w[np.maximum(idx, 0)]
        out[idx < 0] = 0
        return out

    def push(self, keys, shows, clicks, grads, hour, lr=0.05, ig=3.0):
        if not (np.isfinite(grads).all() and np.isfinite(shows).all() and np.isfinite(clicks).all()
                and (shows >= 0).all() and (clicks >= 0).all()):
            raise ValueError("push values must be finite, shows and clicks >= 0")
        uniq, inv = np.unique(self.rows_of(keys), return_inverse=True)
        if len(uniq) and uniq[0] < 0:     # row -1 would silently update the last row
            raise ValueError("the baseline's push updates existing rows only")
        g = np.zeros((len(uniq), grads.shape[1]), np.float32)
        np.add.at(g, inv, grads)
        push_shows = np.zeros(len(uniq), np.float32)
        np.add.at(push_shows, inv, shows)
        g = g / np.maximum(push_shows, 1.0)[:, None]
        self.show[uniq] += push_shows
        self.click[uniq] += np.bincount(inv, clicks, len(uniq)).astype(np.float32)
        self.last_seen[uniq] = hour
        self.changed[uniq] = True
        w, g2 = self.w[uniq], self.g2[uniq]
        s0 = np.sqrt(ig / (ig + g2[:, 0]))
        s1 = np.sqrt(ig / (ig + g2[:, 1]))
        w[:, 0] -= lr * g[:, 0] * s0
        w[:, 1:] -= lr * g[:, 1:] * s1[:, None]
        g2[:, 0] += g[:, 0] ** 2
        g2[:, 1] += (g[:, 1:] ** 2).mean(axis=1)
        self.w[uniq] = np.clip(w, -10, 10)
        self.g2[uniq] = g2


def run(args):
    rng = np.random.default_rng(args.seed)
    header = (f"{'dim':>4} {'rows':>9} {'dist':>7} | {'pull M/s':>8} {'push M/s':>8} | "
              f"{'bound M/s':>9} {'pull/bnd':>8} | {'dict pull':>9} {'dict push':>9} "
              f"{'pull/dict':>9} {'push/dict':>9} | {'B/row':>6} {'payload':>7} {'ratio':>5}")
    print(f"# pstable bench: batch {args.batch:,} keys, median of {args.repeats}, adagrad, "
          f"single thread, zipf a={args.zipf_a}, clock={'wall' if args.wall else 'cpu'}, "
          f"layout {args.layout}", flush=True)
    print(header)
    print("-" * len(header), flush=True)
    for n_rows in args.sizes:
        keys = rng.integers(0, 2**64 - 1, n_rows, dtype=np.uint64, endpoint=True)
        for dim in args.dims:
            W = dim + 1
            cfg = TableConfig(dim=dim, optimizer=OptimizerConfig(rule="adagrad"),
                              admission=AdmissionConfig(policy="none"), seed=1)
            build_t0 = CLOCK()
            table = push_new_keys(SparseTable(cfg), keys, args.batch)
            build_s = CLOCK() - build_t0
            if args.layout == "shuffled":
                table = shuffled(table, rng)
            bd = table.memory_breakdown()
            table_bytes = sum(v for name, v in bd.items() if name != "scratch")
            bpr = table_bytes / len(table)
            payload = table.payload_bytes
            # same bytes as the row slab, written: untouched np.zeros pages all map the kernel's
            # one zero page, so a gather from them reads cached bytes (1.6x faster here)
            slab = np.ones((n_rows, table.row_bytes // 4), np.float32)
            dict_impl = None
            if not args.no_dict:
                dict_impl = DictBaseline(keys, W)
            print(f"# dim {dim}, {n_rows:,} rows: build {n_rows / build_s / 1e6:.2f} M keys/s "
                  f"({build_s:.2f} s, {len(table):,} rows); memory {table_bytes / 2**20:.1f} MiB "
                  f"(+ push scratch {bd['scratch'] / 2**20:.1f} MiB)", flush=True)
            for dist in ("uniform", "zipf"):
                if dist == "uniform":
                    idx = rng.integers(0, n_rows, args.batch)
                else:
                    idx = zipf_indices(rng, n_rows, args.batch, args.zipf_a)
                q = keys[idx]
                grads = (rng.standard_normal((args.batch, W)) * 0.01).astype(np.float32)
                shows = np.ones(args.batch, np.float32)
                clicks = np.zeros(args.batch, np.float32)
                out = np.empty((args.batch, W), np.float32)
                table.pull(q, out=out)  # warm
                t_pull = median_time(lambda: table.pull(q, out=out), args.repeats)
                hour = [1]

                def push():
                    table.push(q, None, shows, clicks, grads, hour[0])
                    hour[0] += 1
                t_push = median_time(push, args.repeats)
                sorted_idx = idx
                tk = np.empty((args.batch, slab.shape[1]), np.float32)
                t_bound = median_time(lambda: np.take(slab, sorted_idx, axis=0, out=tk), args.repeats)
                pull_r = args.batch / t_pull
                push_r = args.batch / t_push
                bound_r = args.batch / t_bound
                if dict_impl is not None:
                    m = min(args.dict_sample, args.batch) if args.dict_sample else args.batch
                    qs, gs = q[:m], grads[:m]
                    d_pull = m / median_time(lambda: dict_impl.pull(qs), args.repeats)
                    d_push = m / median_time(lambda: dict_impl.push(qs, shows[:m], clicks[:m], gs, 1),
                                             args.repeats)
                    dict_cols = (f"{d_pull / 1e6:9.2f} {d_push / 1e6:9.2f} "
                                 f"{pull_r / d_pull:8.1f}x {push_r / d_push:8.1f}x")
                else:
                    dict_cols = f"{'-':>9} {'-':>9} {'-':>9} {'-':>9}"
                print(f"{dim:>4} {n_rows:>9,} {dist:>7} | {pull_r / 1e6:8.2f} {push_r / 1e6:8.2f} | "
                      f"{bound_r / 1e6:9.2f} {pull_r / bound_r:7.0%} | {dict_cols} | "
                      f"{bpr:6.1f} {payload:7d} {bpr / payload:5.2f}", flush=True)
            table = slab = dict_impl = None  # free before the next size
            gc.collect()
        del keys
        gc.collect()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="dim 8, 1e5 and 1e6 rows, 3 repeats")
    p.add_argument("--dims", type=int, nargs="+", default=[8, 64])
    p.add_argument("--sizes", type=int, nargs="+", default=[10**5, 10**6, 10**7])
    p.add_argument("--batch", type=int, default=10**6)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--zipf-a", type=float, default=1.1)
    p.add_argument("--dict-sample", type=int, default=0,
                   help="time the dict baseline on this many leading keys of the batch (0: all)")
    p.add_argument("--no-dict", action="store_true", help="skip the dict baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=["pushed", "shuffled"], default="pushed",
                   help="rows as the 1M-key build pushes leave them (hash-sorted runs) or in "
                        "random order, as in a table served for long (see shuffled())")
    p.add_argument("--wall", action="store_true",
                   help="time with the wall clock (default: CPU time of this process)")
    args = p.parse_args(argv)
    if args.wall:
        global CLOCK
        CLOCK = time.perf_counter
    if args.quick:
        args.dims, args.sizes, args.repeats = [8], [10**5, 10**6], 3
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
