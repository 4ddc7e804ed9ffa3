"""Shard columns (the ``pstable`` export dict) <-> Parquet, with no per-row Python.

A shard file has the export columns in this order: ``key`` uint64, ``slot`` int32, ``state``
uint8 (0 admitted, 1 pending, 2 tombstone), ``show`` / ``click`` float32, ``last_seen`` int32,
then the ``weights`` matrix [n, 1+dim] (column 0 the 1-wide weight, then the embedding) and the
``opt_state`` matrix [n, k], each as one fixed-size column: Parquet FIXED_LEN_BYTE_ARRAY, Arrow
``fixed_size_binary(4 * width)``, a row's ``width`` little-endian float32 values back to back
(field metadata ``dtype: float32``, ``width``). No ``opt_state`` column when the rule keeps no
state (k = 0). ``matrix_of`` turns such a column into the float32 matrix.

Why not a FixedSizeList<float32> column: Parquet writes repetition/definition levels for every
list element. Nor one float32 column per element (schema 1): the row-major matrices the table
exports and loads then need a transpose on every save and every load. Fixed-size binary encodes
and decodes fastest of the three (``docs/benchmarks.md``, "Why the store is built as it is"): a
plain copy that lands the matrix as the table takes it, nothing transposed either way.
"""
from __future__ import annotations

import os

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

#: Uncompressed by default: random float weights barely compress, and on a local disk the CPU
#: that zstd costs on encode and decode is the limit (``bench/store_bench.py``; the numbers:
#: ``docs/benchmarks.md``, "Why the store is built as it is").
#: ``Stage.open(compression="zstd")`` stays available for slow or remote disks.
DEFAULT_COMPRESSION = "none"
DEFAULT_COMPRESSION_LEVEL = None


def default_threads() -> int:
    """Threads for writing / reading several shard files at once: the CPUs this process may run
    on, at most 4 (each thread holds a shard's columns and file bytes in memory)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def empty(shape, dtype) -> np.ndarray:
    """``np.empty`` in Arrow's memory pool (mimalloc), not glibc's.

    glibc serves every large array with a fresh ``mmap`` (page faults on first touch, ``munmap``
    on free, each taking the process's mmap lock); the pool keeps freed pages for the next
    shard, so reads and encodes into pool buffers are faster (``docs/benchmarks.md``, "Why the
    store is built as it is").
    """
    shape = (shape,) if isinstance(shape, int) else tuple(int(x) for x in shape)
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    buf = pa.allocate_buffer(max(1, count * dtype.itemsize))
    return np.frombuffer(buf, dtype, count=count).reshape(shape)


def matrix_field(name: str, width: int) -> pa.Field:
    """The Arrow field of matrix column ``name`` of ``width`` float32 values a row."""
    return pa.field(name, pa.binary(4 * width), nullable=False,
                    metadata={"dtype": "float32", "width": str(width)})


def shard_schema(dim: int, opt_width: int) -> pa.Schema:
    fields = [pa.field(name, pa.from_numpy_dtype(dt), nullable=False)
              for name, dt in SCALAR_COLUMNS.items()]
    fields.append(matrix_field("weights", 1 + dim))
    if opt_width:
        fields.append(matrix_field("opt_state", opt_width))
    return pa.schema(fields)


def check_columns(cols: dict, *, dim: int | None, opt_width: int | None, where: str) -> dict:
    """Validate an export dict; returns it with C-contiguous arrays (int64 keys viewed as
    uint64).

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


#: Parquet writer settings (the numbers: docs/benchmarks.md, "Why the store is built as it is"):
#: values handed to the column writer 64 K at a time (the default 1024 encodes slower), one row
#: group per shard up to ``MAX_ROW_GROUP`` rows (each column decodes to one Arrow chunk, which
#: numpy then views without a copy), no dictionary, no statistics, no page index.
WRITE_BATCH_SIZE = 1 << 16
MAX_ROW_GROUP = 1 << 26


def columns_to_table(cols: dict) -> pa.Table:
    """Export dict (already checked) -> Arrow table, zero-copy: a matrix's rows are its
    fixed-size column's values as they lie in memory."""
    dim = cols["weights"].shape[1] - 1
    k = cols["opt_state"].shape[1]
    schema = shard_schema(dim, k)
    arrays = [pa.array(cols[name]) for name in SCALAR_COLUMNS]
    for name in MATRIX_COLUMNS:
        if name not in schema.names:  # no opt_state column when the rule keeps none
            continue
        m = cols[name].astype("<f4", copy=False)
        arrays.append(pa.FixedSizeBinaryArray.from_buffers(
            schema.field(name).type, m.shape[0], [None, pa.py_buffer(m)]))
    return pa.Table.from_arrays(arrays, schema=schema)


def encoded_size_bound(table: pa.Table) -> int:
    """Upper bound of the uncompressed Parquet file of ``table``: values at their physical width
    (Parquet stores uint8 as INT32: 4 bytes), page headers, footer (schema, Arrow schema)."""
    n = table.num_rows
    values = sum(n * max(4, f.type.bit_width // 8) for f in table.schema)
    pages = n // WRITE_BATCH_SIZE + 2 + 8 * n // (1 << 20)  # per column, generously
    return values + table.num_columns * (4096 + 256 * pages) + (1 << 20)


def encode_parquet(cols: dict, *, compression=DEFAULT_COMPRESSION,
                   compression_level=DEFAULT_COMPRESSION_LEVEL) -> pa.Buffer:
    """Export dict -> Parquet file bytes (in memory, so the checksum is of exactly these bytes).

    Uncompressed files are written into one buffer allocated up front (a growing
    ``BufferOutputStream`` re-copies as it doubles); if the bound were ever too small
    the file is written again the growing way.
    """
    table = columns_to_table(cols)
    opts = dict(compression=compression,
                compression_level=compression_level if compression not in (None, "none") else None,
                use_dictionary=False, write_statistics=False, write_page_index=False,
                write_batch_size=WRITE_BATCH_SIZE,
                row_group_size=max(1, min(len(table), MAX_ROW_GROUP)))
    if compression in (None, "none"):
        out = pa.allocate_buffer(encoded_size_bound(table))
        sink = pa.FixedSizeBufferWriter(out)
        try:
            pq.write_table(table, sink, **opts)
            return out.slice(0, sink.tell())
        except OSError:  # "Write out of bounds": the bound was wrong; never seen, but be safe
            pass
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **opts)
    return sink.getvalue()


def matrix_of(column, where: str, name: str) -> np.ndarray:
    """A fixed-size matrix column (Arrow array or one-chunk ChunkedArray) -> float32 [n, width],
    a read-only view of its Arrow memory (no copy)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    t = column.type
    if not pa.types.is_fixed_size_binary(t) or t.byte_width % 4:
        raise SchemaError(f"{where}: column {name!r} has type {t}, expected fixed_size_binary "
                          f"of float32 values (a multiple of 4 bytes)")
    width, n = t.byte_width // 4, len(column)
    if column.null_count:
        raise SchemaError(f"{where}: column {name!r} has {column.null_count} null(s)")
    if n == 0:
        return np.empty((0, width), np.float32)
    m = np.frombuffer(column.buffers()[1], "<f4", count=n * width,
                      offset=column.offset * t.byte_width).reshape(n, width)
    m.flags.writeable = False  # as to_numpy() gives the scalar columns
    return m


def _stacked_element_columns(table: pa.Table, name: str, present: list[str], where: str):
    """Matrix ``name`` of a schema-1 shard: float32 columns ``name_0`` .. ``name_<w-1>``,
    stacked into [n, w] (a copy: only chains saved before schema 2 take this path)."""
    names = [c for c in present if c.rsplit("_", 1)[0] == name and c.rsplit("_", 1)[1].isdigit()]
    if names != [f"{name}_{i}" for i in range(len(names))]:
        raise SchemaError(f"{where}: columns of {name!r} are {names}, expected {name}_0 .. in order")
    parts = [table.column(c).to_numpy() for c in names]
    if any(p.dtype != np.float32 for p in parts):
        raise SchemaError(f"{where}: columns of {name!r} must be float32")
    return np.stack(parts, axis=1) if parts else np.empty((table.num_rows, 0), np.float32)


def decode_parquet(buf, *, where: str, columns=None, opt_width: int | None = None,
                   use_threads: bool = True) -> dict:
    """Parquet bytes -> export dict of numpy arrays (scalars are read-only views of Arrow memory).

    ``columns`` limits what is decoded (e.g. ``("key", "slot", "state", "weights")`` for predict).
    ``use_threads``: decode columns on Arrow's thread pool (off when the caller already decodes
    several files at once on its own threads).
    """
    want = list(COLUMNS if columns is None else columns)
    try:
        pf = pq.ParquetFile(pa.BufferReader(buf))
        present = pf.schema_arrow.names
        table = pf.read(columns=[c for c in present if c in want or c.rsplit("_", 1)[0] in want],
                        use_threads=use_threads)
    except (pa.ArrowException, OSError) as e:
        raise SchemaError(f"{where}: not a readable Parquet shard: {e}") from None
    out = {}
    for name in want:
        if name in MATRIX_COLUMNS:
            out[name] = _matrix_column(table, name, present, where, opt_width)
            continue
        if name not in present:
            raise SchemaError(f"{where}: column {name!r} missing")
        a = table.column(name).to_numpy()
        if a.dtype != SCALAR_COLUMNS[name]:
            raise SchemaError(f"{where}: column {name!r} has dtype {a.dtype}, "
                              f"expected {SCALAR_COLUMNS[name]}")
        out[name] = a
    return out


def _matrix_column(table: pa.Table, name: str, present: list[str], where: str,
                   opt_width: int | None) -> np.ndarray:
    """Matrix column ``name`` of a decoded shard as float32 [n, width]."""
    if name in present:
        m = matrix_of(table.column(name), where, name)
    elif f"{name}_0" in present:
        m = _stacked_element_columns(table, name, present, where)  # a schema-1 shard
    elif name == "opt_state" and opt_width == 0:
        m = np.empty((table.num_rows, 0), np.float32)  # the rule keeps no state
    else:
        raise SchemaError(f"{where}: column {name!r} missing")
    if name == "opt_state" and opt_width is not None and m.shape[1] != opt_width:
        raise SchemaError(f"{where}: opt_state has {m.shape[1]} values a row, expected {opt_width}")
    return m


def split_by_shard(cols: dict, owner, shard_ids):
    """Yield ``(shard, columns)`` for each of ``shard_ids``: the rows of ``cols`` whose
    ``owner`` is that shard, in their original order (empty columns for a shard with no rows).

    Lazy: one stable sort of ``owner`` up front (a radix sort: owner is narrowed to uint8/uint16
    when it fits), then one gather per shard when it is asked for, so only the shard being
    written is copied. Replaces ``{k: v[owner == s]}`` per shard (one scan of ``owner`` per shard).

    >>> cols = {"key": np.array([10, 11, 12, 13], np.uint64), "w": np.arange(8.).reshape(4, 2)}
    >>> [(s, c["key"].tolist(), c["w"].shape) for s, c in split_by_shard(cols, [1, 0, 1, 3], [0, 1, 2])]
    [(0, [11], (1, 2)), (1, [10, 12], (2, 2)), (2, [], (0, 2))]
    """
    owner = np.asarray(owner)
    n = len(next(iter(cols.values()))) if cols else 0
    if owner.ndim != 1 or owner.shape[0] != n:
        raise SchemaError(f"owner: expected [{n}] shard ids, got {list(owner.shape)}")
    shard_ids = [int(s) for s in shard_ids]
    top = max([int(owner.max()) + 1 if n else 0, *(s + 1 for s in shard_ids)])
    if n and owner.min() < 0:
        raise SchemaError(f"owner: negative shard id {int(owner.min())}")
    narrow = np.uint8 if top <= 1 << 8 else np.uint16 if top <= 1 << 16 else np.int64
    order = np.argsort(owner.astype(narrow, copy=False), kind="stable")
    starts = np.zeros(top + 1, np.int64)
    np.cumsum(np.bincount(owner, minlength=top), out=starts[1:])
    for s in shard_ids:
        rows = order[starts[s]:starts[s + 1]]
        part = {}
        for name, a in cols.items():  # mode="clip": the default "raise" copies through a buffer
            part[name] = np.take(a, rows, axis=0, mode="clip",
                                 out=empty((len(rows), *a.shape[1:]), a.dtype))
        yield s, part


def state_counts(state: np.ndarray) -> dict:
    c = np.bincount(state, minlength=3)
    if c.shape[0] > 3:
        raise SchemaError(f"state column has values > 2 (max {int(state.max())})")
    return {"admitted": int(c[0]), "pending": int(c[1]), "tombstones": int(c[2])}
