"""Shard columns (the ``pstable`` export dict) <-> Parquet, with no per-row Python.

A shard file has the export columns in this order: ``key`` uint64, ``slot`` int32, ``state``
uint8 (0 admitted, 1 pending, 2 tombstone), ``show`` / ``click`` float32, ``last_seen`` int32,
then the ``weights`` matrix [n, 1+dim] as float32 columns ``weights_0`` (the 1-wide weight) ..
``weights_<dim>`` (the embedding), and the ``opt_state`` matrix [n, k] as ``opt_state_0`` ..
``opt_state_<k-1>`` (none when the rule keeps no state).

Why one column per element, not a FixedSizeList column: Parquet writes repetition/definition
levels for every list element. Measured here on 1e6 rows x 9 floats (pyarrow 26, no compression):
FixedSizeList 240 MB/s encode, 470 MB/s decode; plain columns 660 MB/s and 2000+ MB/s. The plain
columns are also what any Parquet reader (pandas, DuckDB, Spark) shows as ordinary floats.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import SchemaError

SCALAR_COLUMNS = {
    "key": np.dtype(np.uint64),
    "slot": np.dtype(np.int32),
    "state": np.dtype(np.uint8),
    "show": np.dtype(np.float32),
    "click": np.dtype(np.float32),
    "last_seen": np.dtype(np.int32),
}
MATRIX_COLUMNS = ("weights", "opt_state")
COLUMNS = tuple(SCALAR_COLUMNS) + MATRIX_COLUMNS

STATE_ADMITTED, STATE_PENDING, STATE_TOMBSTONE = 0, 1, 2

#: Parquet writer settings, measured (bench/store_bench.py, docs/model-store.md): on 1e6 rows of
#: dim 8 zstd level 1 saves ~20 % of the bytes (random float weights barely compress) but costs
#: ~1.4x on encode and ~2x on decode; the disk here writes > 700 MB/s, so CPU is the limit and
#: uncompressed wins. ``Stage.open(compression="zstd")`` stays available for slow or remote disks.
DEFAULT_COMPRESSION = "none"
DEFAULT_COMPRESSION_LEVEL = None


def element_columns(name: str, width: int) -> list[str]:
    """Parquet column names of matrix column `name`: ``name_0`` .. ``name_<width-1>``."""
    return [f"{name}_{i}" for i in range(width)]


def shard_schema(dim: int, opt_width: int) -> pa.Schema:
    fields = [pa.field(name, pa.from_numpy_dtype(dt), nullable=False)
              for name, dt in SCALAR_COLUMNS.items()]
    for name, width in (("weights", 1 + dim), ("opt_state", opt_width)):
        fields += [pa.field(c, pa.float32(), nullable=False) for c in element_columns(name, width)]
    return pa.schema(fields)


def check_columns(cols: dict, *, dim: int | None, opt_width: int | None, where: str) -> dict:
    """Validate an export dict; returns it with C-contiguous arrays (int64 keys viewed as uint64).

    Raises ``SchemaError`` naming ``where``, the column, and expected vs actual.
    """
    missing = [c for c in COLUMNS if c not in cols]
    if missing:
        raise SchemaError(f"{where}: missing column(s) {missing}; expected {list(COLUMNS)}")
    out = {}
    key = np.asarray(cols["key"])
    if key.dtype == np.int64:
        key = key.view(np.uint64)
    n = key.shape[0] if key.ndim == 1 else -1
    for name, dt in SCALAR_COLUMNS.items():
        a = key if name == "key" else np.asarray(cols[name])
        if a.dtype != dt or a.ndim != 1 or a.shape[0] != n:
            raise SchemaError(f"{where}: column {name!r} expected {dt}[{n}], got {a.dtype}{list(a.shape)}")
        out[name] = np.ascontiguousarray(a)
    for name, width in (("weights", None if dim is None else 1 + dim), ("opt_state", opt_width)):
        a = np.asarray(cols[name])
        if a.dtype != np.float32 or a.ndim != 2 or a.shape[0] != n or (
                width is not None and a.shape[1] != width):
            exp = f"float32[{n}, {width if width is not None else 'k'}]"
            raise SchemaError(f"{where}: column {name!r} expected {exp}, got {a.dtype}{list(a.shape)}")
        out[name] = np.ascontiguousarray(a)
    return out


def columns_to_table(cols: dict) -> pa.Table:
    """Export dict (already checked) -> Arrow table; zero-copy where Arrow allows."""
    dim = cols["weights"].shape[1] - 1
    k = cols["opt_state"].shape[1]
    schema = shard_schema(dim, k)
    arrays = [pa.array(cols[name]) for name in SCALAR_COLUMNS]
    for name in MATRIX_COLUMNS:
        transposed = np.ascontiguousarray(cols[name].T)  # one contiguous run per element column
        arrays += [pa.array(row) for row in transposed]
    return pa.Table.from_arrays(arrays, schema=schema)


def encode_parquet(cols: dict, *, compression=DEFAULT_COMPRESSION,
                   compression_level=DEFAULT_COMPRESSION_LEVEL) -> pa.Buffer:
    """Export dict -> Parquet file bytes (in memory, so the checksum is of exactly these bytes)."""
    table = columns_to_table(cols)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression,
                   compression_level=compression_level if compression not in (None, "none") else None,
                   use_dictionary=False, write_statistics=False,
                   row_group_size=max(1, min(len(table), 1 << 20)))
    return sink.getvalue()


def _matrix(table: pa.Table, name: str, present: list[str], where: str) -> np.ndarray:
    """Stack the element columns ``name_0``, ``name_1``, ... of `table` into float32 [n, width]."""
    names = [c for c in present if c.startswith(f"{name}_") and c[len(name) + 1:].isdigit()]
    width = len(names)
    if names != element_columns(name, width):
        raise SchemaError(f"{where}: columns of {name!r} are {names}, expected "
                          f"{name}_0 .. {name}_{width - 1} in order")
    out = np.empty((table.num_rows, width), np.float32)
    for i, column in enumerate(names):
        values = table.column(column)
        if values.type != pa.float32():
            raise SchemaError(f"{where}: column {column!r} has type {values.type}, expected float")
        out[:, i] = values.to_numpy()
    return out


def decode_parquet(buf, *, where: str, columns=None, opt_width: int | None = None) -> dict:
    """Parquet bytes -> export dict of numpy arrays (scalars are read-only views of Arrow memory).

    ``columns`` limits what is decoded (e.g. ``("key", "slot", "state", "weights")`` for predict).
    """
    want = list(COLUMNS if columns is None else columns)
    try:
        pf = pq.ParquetFile(pa.BufferReader(buf))
        present = pf.schema_arrow.names
        to_read = [c for c in present
                   if c in want or any(c.startswith(f"{m}_") for m in want if m in MATRIX_COLUMNS)]
        table = pf.read(columns=to_read, use_threads=True)
    except (pa.ArrowException, OSError) as e:
        raise SchemaError(f"{where}: not a readable Parquet shard: {e}") from None
    out = {}
    for name in want:
        if name in MATRIX_COLUMNS:
            out[name] = _matrix(table, name, to_read, where)
            if name == "opt_state" and opt_width is not None and out[name].shape[1] != opt_width:
                raise SchemaError(f"{where}: {out[name].shape[1]} opt_state columns, "
                                  f"expected {opt_width}")
            continue
        if name not in present:
            raise SchemaError(f"{where}: column {name!r} missing")
        a = table.column(name).to_numpy()
        if a.dtype != SCALAR_COLUMNS[name]:
            raise SchemaError(f"{where}: column {name!r} has dtype {a.dtype}, "
                              f"expected {SCALAR_COLUMNS[name]}")
        out[name] = a
    return out


def state_counts(state: np.ndarray) -> dict:
    c = np.bincount(state, minlength=3)
    if c.shape[0] > 3:
        raise SchemaError(f"state column has values > 2 (max {int(state.max())})")
    return {"admitted": int(c[0]), "pending": int(c[1]), "tombstones": int(c[2])}
