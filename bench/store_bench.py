"""Model-store benchmark: full save, chain load and a 5 % delta, beside the disk's own speed.

    .venv/bin/python bench/store_bench.py            # 1e6 and 1e7 rows (needs ~4 GB RAM, ~2 GB disk)
    .venv/bin/python bench/store_bench.py --quick    # 1e5 and 1e6 rows
    .venv/bin/python bench/store_bench.py --repeat 5 --table --threads 2

Rows have dim 8 (weights width 9) and adagrad opt_state width 2: 69 bytes per row in memory.
"save" = stage (``Stage.write_shards`` of the 8 shards: encode Parquet, CRC-32, write + fsync,
on ``--threads`` threads) + commit (re-verify every file's size and CRC-32, rename, ledger
fsync). "job save" = the same from one unsplit export, as ``trainer/job.py`` does it
(``split_by_shard`` with ``sharding.shard_of``, lazily, while shards are written). "load" =
load_chain + ``Chain.iter_shards`` of every shard of every version (read, CRC-32, decode to
numpy, files read ahead on threads). ``--table`` adds "load into SparseTable": what the job's
``_load_server_state`` does (``reserve`` the base's admitted rows, iter_shards feeding
``pstable.SparseTable.load``, ``mark_saved``).
The disk line writes a file of the same size with one fsync and reads it back 16 MB at a time
(the baseline of "% of disk": a copy out of the page cache into reused memory, the strict bound);
it also prints the speed of reading the file whole into one fresh buffer, which pays page faults
and zeroing as a load holding its data does. The page cache cannot be dropped here, so reads
(the disk's and the store's) are from cache: they measure CPU, not the device. Every line is
the median of ``--repeat`` runs; "% of disk" is the median of the per-run ratios (each run is
compared with the disk probe made right before it), so a busy machine skews both sides alike.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.sharding import shard_of, shards_of_server  # noqa: E402
from trainer.store import Stage, load_chain, save  # noqa: E402
from trainer.store.columns import split_by_shard  # noqa: E402

DIM, K, SHARDS = 8, 2, 8
H0 = 490_000 - 490_000 % 24


def make_cols(n, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "key": rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True),
        "slot": rng.integers(0, 26, n).astype(np.int32),
        "state": (rng.random(n) < 0.05).astype(np.uint8),
        "show": rng.random(n, dtype=np.float32) * 100,
        "click": rng.random(n, dtype=np.float32) * 5,
        "last_seen": rng.integers(H0 - 24 * 30, H0, n).astype(np.int32),
        "weights": rng.standard_normal((n, 1 + DIM), dtype=np.float32) * 0.01,
        "opt_state": rng.random((n, K), dtype=np.float32) + 3,
    }


def split(cols, shards=SHARDS):
    owner = (cols["key"] % np.uint64(shards)).astype(np.int64)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(shards + 1))
    return [{c: a[order[bounds[s]:bounds[s + 1]]] for c, a in cols.items()} for s in range(shards)]


def nbytes(cols):
    return sum(a.nbytes for a in cols.values())


def disk_speed(folder: Path, size: int):
    data = np.random.default_rng(1).bytes(size)
    p = folder / "_disk_probe"
    t0 = time.perf_counter()
    with open(p, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tw = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open(p, "rb") as f:
        while f.read(16 << 20):
            pass
    tr = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open(p, "rb") as f:
        whole = f.read()
    tw_read = time.perf_counter() - t0
    del whole
    p.unlink()
    return size / tw / 1e6, size / tr / 1e6, size / tw_read / 1e6


def save_version(d, hour, kind, parent, shards, compression, threads):
    """``shards``: a list of shard column dicts, or ``(cols, owner)`` to split as the job does."""
    t0 = time.perf_counter()
    st = Stage.open(d, hour, kind, parent, num_shards=SHARDS, dim=DIM, opt_width=K,
                    optimizer_rule="adagrad", compression=compression,
                    compression_level=1 if compression == "zstd" else None)
    if isinstance(shards, tuple):
        cols, owner = shards
        pairs = split_by_shard(cols, owner, range(SHARDS))
    else:
        pairs = enumerate(shards)
    infos = st.write_shards(pairs, threads=threads)
    infos.append(st.write_dense({"params": np.zeros(10_000, np.float32)}))
    st.finish(infos, metrics={"auc": 0.5})
    t_stage = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = save(d, hour, kind=kind, publish=False)
    t_commit = time.perf_counter() - t0
    return res.version, t_stage, t_commit, sum(i.bytes for i in infos)


def load_all(d, threads, table=False):
    """Chain load of every shard; ``table``: into a SparseTable as ``job._load_server_state``
    does it (reserve the base's admitted rows, load every file, mark_saved)."""
    t0 = time.perf_counter()
    ch = load_chain(d, num_shards=SHARDS)
    mine = shards_of_server(0, SHARDS, 1)
    rows = 0
    tab = None
    if table:
        import pstable
        tab = pstable.SparseTable(pstable.TableConfig(dim=DIM, optimizer={"rule": "adagrad"}))
        tab.reserve(ch.admitted_rows(mine))
    for _s, _v, cols in ch.iter_shards(mine, threads=threads):
        rows += cols["key"].shape[0]
        if tab is not None:
            tab.load(cols)
    if tab is not None:
        tab.mark_saved()
    return time.perf_counter() - t0, rows


class Runs:
    """Named lists of per-run values; medians at the end."""

    def __init__(self):
        self.v: dict[str, list[float]] = {}

    def add(self, name, value):
        self.v.setdefault(name, []).append(value)

    def __getitem__(self, name):
        return statistics.median(self.v[name])


def run(n, folder: Path, compression: str, repeat: int, threads, table: bool):
    d = folder / f"model-{n}"
    cols = make_cols(n)
    raw = nbytes(cols)
    owner = shard_of(cols["key"], cols["slot"], SHARDS)
    shards = split(cols)
    m = max(1, n // 20)  # a 5 % delta: updated rows of the base (new values), same shards
    delta = make_cols(m, seed=2)
    pick = np.random.default_rng(3).choice(n, m, replace=False)
    delta["key"], delta["slot"] = cols["key"][pick], cols["slot"][pick]
    dshards = split(delta)
    draw = nbytes(delta)
    r = Runs()
    for _ in range(repeat):
        shutil.rmtree(d, ignore_errors=True)
        v1, ts, tc, fbytes = save_version(d, H0, "full", None, shards, compression, threads)
        dw, dr, dwhole = disk_speed(folder, fbytes)
        r.add("dw", dw)
        r.add("dr", dr)
        r.add("dwhole", dwhole)
        r.add("save", ts + tc)
        r.add("stage", ts)
        r.add("commit", tc)
        r.add("save%", fbytes / (ts + tc) / 1e6 / dw)
        tl, rows = load_all(d, threads)
        r.add("load", tl)
        r.add("load%", fbytes / tl / 1e6 / dr)
        if table:
            r.add("tload", load_all(d, threads, table=True)[0])
        shutil.rmtree(d, ignore_errors=True)
        _v, ts, tc, _b = save_version(d, H0, "full", None, (cols, owner), compression, threads)
        r.add("jobsave", ts + tc)
        r.add("jobsave%", fbytes / (ts + tc) / 1e6 / dw)
        _v2, ts2, tc2, fb2 = save_version(d, H0 + 1, "delta", v1, dshards, compression, threads)
        r.add("dsave", ts2 + tc2)
        r.add("dload", load_all(d, threads)[0])
    shutil.rmtree(d, ignore_errors=True)
    print(f"\n== {n:,} rows, {raw / 1e6:.0f} MB in memory, {fbytes / 1e6:.0f} MB on disk "
          f"({compression}), {SHARDS} shards, threads {threads or 'default'}, "
          f"median of {repeat}")
    print(f"  disk          write+fsync {r['dw']:7.0f} MB/s   read (cached) {r['dr']:7.0f} MB/s   "
          f"({fbytes / 1e6:.0f} MB file; read whole into fresh memory {r['dwhole']:.0f} MB/s)")

    def line(label, t, mem, pct=None, what="", extra=""):
        tail = f"= {r[pct]:4.0%} of {what}" if pct else ""
        print(f"  {label:15s} {t:6.2f} s  {n / t / 1e6 if mem == raw else m / t / 1e6:6.2f} M rows/s  "
              f"{mem / t / 1e6:6.0f} MB/s (memory)  {fbytes / t / 1e6 if mem == raw else fb2 / t / 1e6:6.0f}"
              f" MB/s (file)  {tail}{extra}")

    line("full save", r["save"], raw, "save%", "disk write",
         f"   [stage {r['stage']:.2f} s, commit {r['commit']:.2f} s]")
    line("job save", r["jobsave"], raw, "jobsave%", "disk write", "   [split by shard_of + save]")
    line("full load", r["load"], raw, "load%", "cached disk read")
    if table:
        print(f"  load into SparseTable {r['tload']:6.2f} s  {n / r['tload'] / 1e6:6.2f} M rows/s"
              f"   (as the job's _load_server_state: reserve, iter_shards -> SparseTable.load)")
    line("5% delta save", r["dsave"], draw)
    print(f"  base+delta load {r['dload']:6.2f} s  {(n + m) / r['dload'] / 1e6:6.2f} M rows/s  "
          f"{(raw + draw) / r['dload'] / 1e6:6.0f} MB/s (memory)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1e5 and 1e6 rows instead of 1e6 and 1e7")
    ap.add_argument("--rows", type=float, nargs="*", help="row counts (overrides --quick)")
    ap.add_argument("--compression", default="none", choices=["zstd", "none", "snappy", "lz4"])
    ap.add_argument("--repeat", type=int, default=3, help="runs per size; medians are printed")
    ap.add_argument("--threads", type=int, default=None,
                    help="write_shards / iter_shards threads (default: columns.default_threads())")
    ap.add_argument("--table", action="store_true", help="also load into a pstable.SparseTable")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp dir under var/)")
    a = ap.parse_args(argv)
    sizes = [int(x) for x in (a.rows or ([1e5, 1e6] if a.quick else [1e6, 1e7]))]
    root = Path(__file__).resolve().parents[1] / "var"
    root.mkdir(exist_ok=True)
    folder = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="store-bench-", dir=root))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"store bench in {folder}: dim {DIM}, opt_state width {K}, cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    try:
        for n in sizes:
            run(n, folder, a.compression, max(1, a.repeat), a.threads, a.table)
    finally:
        if not a.dir:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
