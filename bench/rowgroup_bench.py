"""Cost of tiny row groups: one file of N one-row row groups against the same rows in one row group.

Printed, in one run, each the median of ``--repeats`` runs taken turn by turn:

- reading alone (``trainer.reader.BatchReader`` over the file, one worker's batches), with this
  tree's reader and with the reader of git revision ``--rev`` (before row groups were read
  together), so the gap it closed is in the same table;
- pyarrow alone (open the file, ``read_row_groups`` of all its row groups): the floor, what
  Parquet's own decoding of a row group costs whatever the reader does;
- the train phase (``seconds.train`` of the result line) of a real ``mpiexec`` job, 1 server +
  1 worker, on each file.

The cost per row group is (tiny - large) / N.

    .venv/bin/python bench/rowgroup_bench.py                  # 1,000 rows, 3 repeats
    .venv/bin/python bench/rowgroup_bench.py --rows 5000 --repeats 5
    .venv/bin/python bench/rowgroup_bench.py --quick          # 200 rows, 1 repeat
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from revisions import module_at  # noqa: E402
from tests.support import write_model_config  # noqa: E402
from trainer import partition  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.gendata import generate_hour  # noqa: E402
from trainer.hours import hour_index, hour_str, partition_relpath  # noqa: E402
from trainer import reader as this_reader  # noqa: E402

HOUR = hour_index("2026-11-26T00")
#: The last revision whose reader read (and checked) one row group at a time.
BEFORE_REV = "cdecb27"
LAYOUTS = ("large", "tiny")  # one row group; one row per row group


def reader_of(rev: str):
    """``trainer/reader.py`` of git revision `rev` as a module."""
    return module_at(rev, "trainer/reader.py", "reader_before")


def make_configs(root: Path, rows: int) -> dict[str, Path]:
    """One model config per layout, its partition holding the same `rows` rows."""
    configs = {}
    table = None
    for layout in LAYOUTS:
        path = write_model_config(root / layout)
        cfg = load_config(path)
        part = Path(cfg.data_root) / partition_relpath(HOUR)
        if table is None:
            table, _ = generate_hour(cfg.columns, HOUR, rows, seed=3)
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        pq.write_table(table, part / "part-00000.parquet",
                       row_group_size=1 if layout == "tiny" else rows)
        (part / "_SUCCESS").touch()
        configs[layout] = path
    return configs


def read_seconds(config: Path, reader_module) -> float:
    cfg = load_config(config)
    part = partition.locate(cfg.data_root, HOUR)
    files, _ = partition.check_schema(part, partition.list_files(part, checksums=False),
                                      cfg.columns)
    units = partition.assign_work(files, 1)[0]
    started = time.perf_counter()
    for _batch in reader_module.BatchReader(units, cfg.columns, cfg.train.batch_size,
                                            filesystem=part.fs):
        pass
    return time.perf_counter() - started


def pyarrow_seconds(config: Path) -> float:
    cfg = load_config(config)
    [path] = (Path(cfg.data_root) / partition_relpath(HOUR)).glob("*.parquet")
    started = time.perf_counter()
    parquet = pq.ParquetFile(path)
    parquet.read_row_groups(list(range(parquet.metadata.num_row_groups)))
    return time.perf_counter() - started


def train_seconds(config: Path) -> float:
    cfg = load_config(config)
    shutil.rmtree(cfg.model_dir, ignore_errors=True)
    command = [str(Path(sys.executable).parent / "mpiexec"), "-n", "2", sys.executable, "-m",
               "trainer", "train", "--config", str(config), "--hour", hour_str(HOUR)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"job failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("[streamtrain] result "))
    return json.loads(line.split(" ", 2)[2])["seconds"]["train"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rev", default=BEFORE_REV, help="the reader to compare with")
    parser.add_argument("--quick", action="store_true", help="200 rows, 1 repeat")
    parser.add_argument("--root", default=str(REPO / "var" / "bench" / "rowgroup"))
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeats = 200, 1
    configs = make_configs(Path(args.root).resolve(), args.rows)
    before = reader_of(args.rev)
    current = this_reader
    for layout in LAYOUTS:  # warm-up: imports, page cache
        read_seconds(configs[layout], current)
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):  # turn by turn, so a load change hits every cell alike
        for layout in LAYOUTS:
            for name, module in (("read, this tree", current), (f"read, {args.rev}", before)):
                samples.setdefault((name, layout), []).append(read_seconds(configs[layout],
                                                                           module))
            samples.setdefault(("pyarrow alone", layout), []).append(pyarrow_seconds(
                configs[layout]))
            samples.setdefault(("train phase", layout), []).append(train_seconds(configs[layout]))
    print(f"rowgroup_bench: {args.rows} rows: one row group vs {args.rows} one-row row groups; "
          f"{args.repeats} repeat(s), {os.cpu_count()} cores; medians")
    print(f"{'':22} {'1 row group':>12} {f'{args.rows} groups':>12} {'ratio':>7} "
          f"{'ms per group':>13}")
    for name in dict.fromkeys(n for n, _ in samples):
        large, tiny = (statistics.median(samples[(name, layout)]) for layout in LAYOUTS)
        print(f"{name:22} {large:11.4f}s {tiny:11.4f}s {tiny / large:6.1f}x "
              f"{(tiny - large) / args.rows * 1e3:13.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
