"""Shared fixtures of the trainer tests: a small column config and a Parquet partition writer."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.config import ColumnsConfig
from trainer.hours import partition_relpath


HOUR = 498805  # 2026-11-26T13


@pytest.fixture
def make_columns():
    """`make_columns(**kw)`: a ColumnsConfig of the model config."""
    return ColumnsConfig


@pytest.fixture
def columns() -> ColumnsConfig:
    return ColumnsConfig(label="label", show="", slots=("user", "tags"), dense=("d0", "d1"))


def _base_table(n: int = 6) -> pa.Table:
    """A valid table of the `columns` fixture's schema, n rows."""
    return pa.table({
        "label": pa.array([i % 2 for i in range(n)], pa.int64()),
        "user": pa.array(list(range(100, 100 + n)), pa.int64()),
        "tags": pa.array([[i, i + 1] if i % 3 else [] for i in range(n)], pa.list_(pa.int64())),
        "d0": pa.array([float(i) for i in range(n)], pa.float64()),
        "d1": pa.array([0.5] * n, pa.float32()),
        "extra": pa.array(["x"] * n),
    })


def _write_partition(root: Path, tables: dict[str, pa.Table], hour: int = HOUR, success: bool = True,
                    row_group_size: int | None = None) -> Path:
    """Write `tables` as Parquet files of the partition of `hour` under `root`."""
    part = root / partition_relpath(hour)
    part.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, part / name, row_group_size=row_group_size)
    if success:
        (part / "_SUCCESS").touch()
    return part


@pytest.fixture
def base_table():
    """`base_table(n)`: a valid table for the `columns` fixture (plus an ignored extra column)."""
    return _base_table


@pytest.fixture
def write_partition():
    """`write_partition(root, {name: table}, hour=HOUR, success=True, row_group_size=None)`."""
    return _write_partition
