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

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pstable import rows_of_columns

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
    shard. Measured here: reading the 8 files of 1e6 rows (72 MB) from the page cache took
    30-40 ms with ``Path.read_bytes`` and 17 ms into pool buffers; a 90 MB Parquet encode 39 ms
    into a numpy buffer, 29 ms into a pool buffer.
    """
    shape = (shape,) if isinstance(shape, int) else tuple(int(x) for x in shape)
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    buf = pa.allocate_buffer(max(1, count * dtype.itemsize))
    return np.frombuffer(buf, dtype, count=count).reshape(shape)


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
    """Validate an export dict; returns it with contiguous arrays (int64 keys viewed as uint64;
    matrices C- or Fortran-contiguous, as given).

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
        out[name] = a if a.flags.c_contiguous or a.flags.f_contiguous else np.ascontiguousarray(a)
    return out


#: Rows per block of the blocked transpose (row-major matrix -> element columns, for a save): a
#: block of 8192 rows of a [n, 9] float32 matrix is 295 KB, so source and destination stay in
#: cache. Measured here: [125 K, 9] -> element columns 6.9 ms with ``np.ascontiguousarray(m.T)``,
#: 1.1 ms blocked.
BLOCK_ROWS = 8192

#: Parquet writer settings, measured (docs/model-store.md "Save and load speed"): values handed to
#: the column writer 64 K at a time (the default 1024 costs ~25 % more encode time), one row
#: group per shard up to ``MAX_ROW_GROUP`` rows (each column decodes to one Arrow chunk, which
#: numpy then views without a copy), no dictionary, no statistics, no page index.
WRITE_BATCH_SIZE = 1 << 16
MAX_ROW_GROUP = 1 << 26


def element_matrix(m: np.ndarray) -> np.ndarray:
    """``[n, w]`` -> C-contiguous ``[w, n]`` (row ``i`` = element column ``i``), blocked; free
    when ``m`` is already column-major."""
    if m.T.flags.c_contiguous:
        return m.T
    n, w = m.shape
    out = empty((w, n), m.dtype)
    for start in range(0, n, BLOCK_ROWS):
        out[:, start:start + BLOCK_ROWS] = m[start:start + BLOCK_ROWS].T
    return out


def columns_to_table(cols: dict) -> pa.Table:
    """Export dict (already checked) -> Arrow table; zero-copy except one blocked transpose per
    matrix (the element columns are the rows of ``element_matrix``, which Arrow wraps as is)."""
    dim = cols["weights"].shape[1] - 1
    k = cols["opt_state"].shape[1]
    schema = shard_schema(dim, k)
    arrays = [pa.array(cols[name]) for name in SCALAR_COLUMNS]
    for name in MATRIX_COLUMNS:
        arrays += [pa.array(row) for row in element_matrix(cols[name])]
    return pa.Table.from_arrays(arrays, schema=schema)


def _size_bound(table: pa.Table) -> int:
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
    ``BufferOutputStream`` re-copies as it doubles: ~2x slower); if the bound were ever too small
    the file is written again the growing way.
    """
    table = columns_to_table(cols)
    opts = dict(compression=compression,
                compression_level=compression_level if compression not in (None, "none") else None,
                use_dictionary=False, write_statistics=False, write_page_index=False,
                write_batch_size=WRITE_BATCH_SIZE,
                row_group_size=max(1, min(len(table), MAX_ROW_GROUP)))
    if compression in (None, "none"):
        out = pa.allocate_buffer(_size_bound(table))
        sink = pa.FixedSizeBufferWriter(out)
        try:
            pq.write_table(table, sink, **opts)
            return out.slice(0, sink.tell())
        except OSError:  # "Write out of bounds": the bound was wrong; never seen, but be safe
            pass
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **opts)
    return sink.getvalue()


def _matrix(table: pa.Table, name: str, present: list[str], where: str) -> np.ndarray:
    """Stack the element columns ``name_0``, ``name_1``, ... of `table` into float32 [n, width]
    (``pstable.rows_of_columns``: SSE transposes, ~4x numpy's blocked strided copies, which were
    ~27 % of a chain load's CPU)."""
    names = [c for c in present if c.startswith(f"{name}_") and c[len(name) + 1:].isdigit()]
    width = len(names)
    if names != element_columns(name, width):
        raise SchemaError(f"{where}: columns of {name!r} are {names}, expected "
                          f"{name}_0 .. {name}_{width - 1} in order")
    parts = []
    for column in names:
        values = table.column(column)
        if values.type != pa.float32():
            raise SchemaError(f"{where}: column {column!r} has type {values.type}, expected float")
        parts.append(values.to_numpy())
    return rows_of_columns(parts, empty((table.num_rows, width), np.float32))


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
        to_read = [c for c in present
                   if c in want or any(c.startswith(f"{m}_") for m in want if m in MATRIX_COLUMNS)]
        table = pf.read(columns=to_read, use_threads=use_threads)
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
