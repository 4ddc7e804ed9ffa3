"""The training job across hosts, and partitions read from S3, each against its one-machine
baseline measured in the same run (root: the hosts are network namespaces).

Job: the CTR-DNN of ``bench/train_bench.py`` (26 Zipf slots, 13 dense, dim 8, MLP 400-400-400,
batch 512), examples/s of the training phase for

- 1 server + 1 worker on this host (shared memory): the baseline;
- 2 servers + 2 workers, each rank on its own namespaced host (``scripts/netns_hosts.py``), talking
  over TCP on the bridge;

with the bytes the hosts sent on the bridge per example and per batch (the whole job: load,
training, the gathers of the save). The machine's cores are shared by every rank whatever the
layout, so the ratio says what the network stack costs, not how a real cluster scales; the bytes
are what decides that on a real network.

Reads: one partition of that model read through ``BatchReader`` (what a worker does: footers,
row groups, decoding) and streamed raw (what the checksums of the file list do), from local disk
and from a real S3 server (moto on loopback; a Python server, so a floor, not S3's speed).
Each number is the median of ``--repeats`` runs.

    .venv/bin/python bench/cluster_bench.py            # 200k rows
    .venv/bin/python bench/cluster_bench.py --quick    # 40k rows, 1 repeat
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "bench"))

import s3_server  # noqa: E402
import train_bench  # noqa: E402
from netns_hosts import Hosts  # noqa: E402
from trainer import partition  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.launch import mpiexec_command  # noqa: E402
from trainer.reader import BatchReader  # noqa: E402


def spread_config(root: Path, hosts: Hosts) -> Path:
    """train_bench's 2 servers + 2 workers config, one rank per namespaced host."""
    path = train_bench.write_config(root, 2, 2)
    mpi = hosts.mpi_settings([1, 1, 1, 1])
    keys = "".join(f"{k} = {json.dumps(v)}\n" for k, v in mpi.items() if k != "env")
    keys += "".join(f'env = {{{k} = "{v}"}}\n' for k, v in mpi["env"].items())
    path.write_text(path.read_text().replace("[mpi]\n", f"[mpi]\n{keys}")
                    .replace("model-2s2w1t", "model-2s2w1t-hosts"))
    return path


def job(config: Path) -> dict:
    cfg = load_config(config)
    subprocess.run(["rm", "-rf", cfg.model_dir], check=True)
    proc = subprocess.run(mpiexec_command(cfg, train_bench.HOUR), cwd=REPO, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"job failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("[streamtrain] result "))
    return json.loads(line[len("[streamtrain] result "):])


def read_rates(cfg) -> tuple[float, float]:
    """(rows/s through BatchReader, MB/s streaming every file) of the bench partition."""
    part = partition.locate(cfg.data_root, train_bench.HOUR, cfg.s3)
    started = time.perf_counter()
    files = partition.list_files(part, checksums=True)  # streams every byte for the sha256
    mb_per_s = sum(f.bytes for f in files) / 1e6 / (time.perf_counter() - started)
    started = time.perf_counter()
    files, _ = partition.check_schema(part, files, cfg.columns)
    rows = sum(b.num_rows for b in BatchReader(partition.assign_work(files, 1)[0], cfg.columns,
                                               cfg.train.batch_size, filesystem=part.fs))
    return rows / (time.perf_counter() - started), mb_per_s


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="40k rows, 1 repeat")
    parser.add_argument("--root", default=str(REPO / "var" / "bench" / "cluster"))
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeats = 40_000, 1
    root = Path(args.root).resolve()
    train_bench.make_data(root, args.rows)
    print(f"cluster_bench: {args.rows} rows, CTR-DNN 26 slots, 13 dense, dim 8, MLP 400-400-400, "
          f"batch 512, {args.repeats} repeat(s), {os.cpu_count()} cores; medians")

    alone = train_bench.write_config(root, 1, 1)
    base = statistics.median(job(alone)["rows_per_s"] for _ in range(args.repeats))
    with Hosts(["s0", "s1", "w0", "w1"]) as hosts:
        config = spread_config(root, hosts)
        speeds, sent = [], []
        for _ in range(args.repeats):
            before = sum(hosts.traffic_bytes(h.name)[0] for h in hosts.hosts)
            speeds.append(job(config)["rows_per_s"])
            sent.append(sum(hosts.traffic_bytes(h.name)[0] for h in hosts.hosts) - before)
    spread, sent_bytes = statistics.median(speeds), statistics.median(sent)
    batches = args.rows / 512
    print(f"{'layout':44} {'examples/s':>11} {'ratio':>6} {'B/example':>10} {'KB/batch':>9}")
    print(f"{'1 server + 1 worker, one host':44} {base:11,.0f} {'1.00':>6} {'-':>10} {'-':>9}")
    print(f"{'2 servers + 2 workers, 4 namespaced hosts':44} {spread:11,.0f} "
          f"{spread / base:6.2f} {sent_bytes / args.rows:10,.0f} {sent_bytes / batches / 1e3:9,.1f}")

    proc, server = s3_server.start("127.0.0.1", root / "moto.log")
    try:
        server.upload(root / "data", "bench")
        on_s3 = load_config(alone, {"data_root": f"s3://{server.bucket}/bench",
                                  "s3": {"endpoint": server.endpoint, "region": s3_server.REGION,
                                         "access_key": server.access_key,
                                         "secret_key": server.secret_key}})
        local = [read_rates(load_config(alone)) for _ in range(args.repeats)]
        remote = [read_rates(on_s3) for _ in range(args.repeats)]
    finally:
        s3_server.stop(proc)
    print(f"{'partition read':44} {'rows/s':>11} {'ratio':>6} {'raw MB/s':>10}")
    for name, runs in (("local disk", local), ("S3 server (moto, loopback)", remote)):
        rows_s = statistics.median(r[0] for r in runs)
        mb_s = statistics.median(r[1] for r in runs)
        ratio = rows_s / statistics.median(r[0] for r in local)
        print(f"{name:44} {rows_s:11,.0f} {ratio:6.2f} {mb_s:10,.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
