"""Bad rows through ``streamtrain run-hour`` (real mpiexec, generated data): the error names the
first bad row in file order with its column and value; quarantine keeps every reason of a row."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support import streamtrain
from trainer import store
from trainer.config import load_config
from trainer.gendata import generate_hours
from trainer.hours import hour_index, hour_str, partition_relpath

pytestmark = pytest.mark.slow

H0 = hour_index("2026-11-26T05")


def _first_file(cfg) -> Path:
    return sorted((Path(cfg.data_root) / partition_relpath(H0)).glob("*.parquet"))[0]


def _edit(path: Path, **columns) -> None:
    """Rewrite `path` with `columns` ({name: (values list edit)}) changed, keeping its row groups."""
    table = pq.read_table(path)
    row_group = pq.ParquetFile(path).metadata.row_group(0).num_rows
    for name, edit in columns.items():
        values = table.column(name).to_pylist()
        edit(values)
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pa.array(values, table.schema.field(name).type))
    pq.write_table(table, path, row_group_size=row_group)


def _set(**cells):
    def edit(values):
        for row, value in cells.items():
            values[int(row[1:])] = value
    return edit


def test_fail_names_the_first_bad_row_in_file_order_with_its_value(model_config):
    path = model_config()
    cfg = load_config(path)
    generate_hours(cfg, cfg.data_root, H0, 1, 2000, seed=9)
    f = _first_file(cfg)
    # both in the first row group (250 rows): the null label is checked first, but comes later
    _edit(f, label=_set(r17=2, r111=None))
    proc = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(H0))
    assert proc.returncode == 3, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("streamtrain: error: mpiexec exited with code 3")
    assert f"{f}: column 'label', row 17: label must be 0 or 1, got 2.0" in line
    assert list(store.StoreLayout(cfg.model_dir).staging.iterdir()) == []


def test_quarantine_keeps_every_reason_and_value_of_a_row(model_config):
    path = model_config()
    path.write_text(path.read_text().replace("[columns]\n", '[columns]\nbad_rows = "quarantine"\n'))
    cfg = load_config(path)
    generate_hours(cfg, cfg.data_root, H0, 1, 2000, seed=10)
    f = _first_file(cfg)
    _edit(f, label=_set(r9=2), d0=_set(r5=float("nan")), d1=_set(r5=float("inf"), r9=float("-inf")))
    proc = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(H0))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(next(ln for ln in proc.stdout.splitlines()
                             if ln.startswith("[streamtrain] result ")).split(" ", 2)[2])
    assert result["bad_rows"] == 2 and result["rows"] == 1998
    quarantined = pq.read_table(Path(cfg.model_dir) / "quarantine" / f"{hour_str(H0)}-worker0.parquet")
    assert quarantined["_row"].to_pylist() == [5, 9]
    assert quarantined["_file"].to_pylist() == [str(f)] * 2
    assert quarantined["_reason"].to_pylist() == [
        "d0: dense value is NaN; d1: dense value is +inf",
        "label: label must be 0 or 1, got 2.0; d1: dense value is -inf",
    ]
