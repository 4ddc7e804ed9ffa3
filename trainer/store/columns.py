"""Shard columns (the ``pstable`` export dict) <-> Parquet, with no per-row Python.

A shard file has the export columns in this order: ``key`` uint64, ``slot`` int32, ``state``
uint8 (0 admitted, 1 pending, 2 tombstone), ``show`` / ``click`` float32, ``last_seen`` int32,
``weights`` FixedSizeList<float32>[1+dim], ``opt_state`` FixedSizeList<float32>[k]. When
``k == 0`` (a rule without per-row state) the ``opt_state`` column is left out of the file
(Arrow cannot build a width-0 FixedSizeList) and reads back as a float32 [n, 0] array.
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


def _fsl_type(width: int) -> pa.DataType:
    return pa.list_(pa.field("item", pa.float32(), nullable=False), width)


def shard_schema(dim: int, opt_width: int) -> pa.Schema:
    fields = [pa.field(name, pa.from_numpy_dtype(dt), nullable=False)
              for name, dt in SCALAR_COLUMNS.items()]
    fields.append(pa.field("weights", _fsl_type(1 + dim), nullable=False))
    if opt_width:
        fields.append(pa.field("opt_state", _fsl_type(opt_width), nullable=False))
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
        m = cols[name]
        if m.shape[1] == 0:
            continue
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)),
                                                        type=_fsl_type(m.shape[1])))
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


def _matrix(col: pa.ChunkedArray, n: int, where: str, name: str) -> np.ndarray:
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if not pa.types.is_fixed_size_list(arr.type) or arr.type.value_type != pa.float32():
        raise SchemaError(f"{where}: column {name!r} has type {arr.type}, "
                          f"expected fixed_size_list<float32>")
    width = arr.type.list_size
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(n, width)


def decode_parquet(buf, *, where: str, columns=None, opt_width: int | None = None) -> dict:
    """Parquet bytes -> export dict of numpy arrays (read-only views of Arrow memory).

    ``columns`` limits what is decoded (e.g. ``("key", "slot", "state", "weights")`` for predict).
    """
    want = list(COLUMNS if columns is None else columns)
    try:
        pf = pq.ParquetFile(pa.BufferReader(buf))
        present = set(pf.schema_arrow.names)
        to_read = [c for c in want if c in present]
        table = pf.read(columns=to_read, use_threads=True)
    except (pa.ArrowException, OSError) as e:
        raise SchemaError(f"{where}: not a readable Parquet shard: {e}") from None
    n = table.num_rows
    out = {}
    for name in want:
        if name == "opt_state" and name not in present:
            if opt_width not in (None, 0):
                raise SchemaError(f"{where}: column 'opt_state' missing, expected width {opt_width}")
            out[name] = np.zeros((n, 0), np.float32)
            continue
        if name not in present:
            raise SchemaError(f"{where}: column {name!r} missing")
        col = table.column(name)
        if name in MATRIX_COLUMNS:
            out[name] = _matrix(col, n, where, name)
        else:
            a = col.to_numpy()
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
