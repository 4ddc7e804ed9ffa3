"""Model-store benchmark: full save, chain load and a 5 % delta, beside the disk's own speed.

    .venv/bin/python bench/store_bench.py            # 1e6 and 1e7 rows (needs ~4 GB RAM, ~2 GB disk)
    .venv/bin/python bench/store_bench.py --quick    # 1e5 and 1e6 rows
    .venv/bin/python bench/store_bench.py --compression none

Rows have dim 8 (weights width 9) and adagrad opt_state width 2: 69 bytes per row in memory.
"save" = stage (encode Parquet, CRC-32, write + fsync every shard) + commit (re-verify every file's
size and CRC-32, rename, ledger fsync). "load" = load_chain + read_shard of every shard of every
version (read, CRC-32, decode to numpy). The disk line writes a file of the same size with one
fsync and reads it back; the page cache cannot be dropped here, so reads (the disk's and the
store's) are from cache: they measure CPU, not the device.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.store import Chain, Stage, load_chain, save  # noqa: E402

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
    p.unlink()
    return size / tw / 1e6, size / tr / 1e6


def save_version(d, hour, kind, parent, shards, compression):
    t0 = time.perf_counter()
    st = Stage.open(d, hour, kind, parent, num_shards=SHARDS, dim=DIM, opt_width=K,
                    optimizer_rule="adagrad", compression=compression,
                    compression_level=1 if compression == "zstd" else None)
    infos = [st.write_shard(s, c) for s, c in enumerate(shards)]
    infos.append(st.write_dense({"params": np.zeros(10_000, np.float32)}))
    st.finish(infos, metrics={"auc": 0.5})
    t_stage = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = save(d, hour, kind=kind, publish=False)
    t_commit = time.perf_counter() - t0
    return res.version, t_stage, t_commit, sum(i.bytes for i in infos)


def load_all(d):
    t0 = time.perf_counter()
    ch = load_chain(d, num_shards=SHARDS)
    rows = 0
    for rank_shards in [Chain.shards_for_rank(SHARDS, 0, 1)]:
        for s in rank_shards:
            for _v, cols in ch.iter_shard(s):
                rows += cols["key"].shape[0]
    return time.perf_counter() - t0, rows


def run(n, folder: Path, compression: str):
    d = folder / f"model-{n}"
    shutil.rmtree(d, ignore_errors=True)
    cols = make_cols(n)
    raw = nbytes(cols)
    shards = split(cols)
    del cols
    v1, ts, tc, fbytes = save_version(d, H0, "full", None, shards, compression)
    tsave = ts + tc
    tl, rows = load_all(d)
    dw, dr = disk_speed(folder, fbytes)
    print(f"\n== {n:,} rows, {raw / 1e6:.0f} MB in memory, {fbytes / 1e6:.0f} MB on disk "
          f"({compression}), {SHARDS} shards")
    print(f"  disk          write+fsync {dw:7.0f} MB/s   read (cached) {dr:7.0f} MB/s   "
          f"({fbytes / 1e6:.0f} MB file)")
    print(f"  full save     {tsave:6.2f} s  {n / tsave / 1e6:6.2f} M rows/s  "
          f"{raw / tsave / 1e6:6.0f} MB/s (memory)  {fbytes / tsave / 1e6:6.0f} MB/s (file)  "
          f"= {fbytes / tsave / 1e6 / dw:4.0%} of disk write   [stage {ts:.2f} s, commit {tc:.2f} s]")
    print(f"  full load     {tl:6.2f} s  {rows / tl / 1e6:6.2f} M rows/s  "
          f"{raw / tl / 1e6:6.0f} MB/s (memory)  {fbytes / tl / 1e6:6.0f} MB/s (file)  "
          f"= {fbytes / tl / 1e6 / dr:4.0%} of cached disk read")
    # a 5 % delta: updated rows of the base (new values), same shards
    m = max(1, n // 20)
    delta = make_cols(m, seed=2)
    pick = np.random.default_rng(3).choice(n, m, replace=False)
    base = {c: np.concatenate([s[c] for s in shards]) for c in shards[0]}
    delta["key"], delta["slot"] = base["key"][pick], base["slot"][pick]
    del base
    dshards = split(delta)
    draw = nbytes(delta)
    v2, ts2, tc2, fb2 = save_version(d, H0 + 1, "delta", v1, dshards, compression)
    t2 = ts2 + tc2
    tl2, rows2 = load_all(d)
    print(f"  5% delta save {t2:6.2f} s  {m / t2 / 1e6:6.2f} M rows/s  "
          f"{draw / t2 / 1e6:6.0f} MB/s (memory)  {fb2 / 1e6:.0f} MB file")
    print(f"  base+delta load {tl2:6.2f} s  {rows2 / tl2 / 1e6:6.2f} M rows/s  "
          f"{(raw + draw) / tl2 / 1e6:6.0f} MB/s (memory)")
    shutil.rmtree(d, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1e5 and 1e6 rows instead of 1e6 and 1e7")
    ap.add_argument("--rows", type=float, nargs="*", help="row counts (overrides --quick)")
    ap.add_argument("--compression", default="none", choices=["zstd", "none", "snappy", "lz4"])
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
            run(n, folder, a.compression)
    finally:
        if not a.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
