"""Parquet rows -> training batches and feature keys.

A worker hands its :class:`trainer.partition.WorkUnit` list (row groups) to :class:`BatchReader`
and gets :class:`Batch` objects of ``batch_size`` rows (the last one may be shorter; a batch may
span row groups and files). Everything is vectorised with pyarrow compute / numpy: no Python per
row.

Per batch of ``n`` rows and ``m`` feature occurrences:

- ``labels`` float32 [n] (0/1), ``shows`` float32 [n] (1 when there is no show column),
  ``dense`` float32 [n, D];
- ``keys`` uint64 [m] (an ``int64`` id viewed bit for bit), ``slots`` int32 [m] (the *table* slot
  id: the slot column's index, or the first slot of its ``shared_tables`` group), ``field`` int32 [m]
  (the pooling position: the index in ``columns.pooled_slots`` = ``slots`` minus ``sequences``, so
  shared slots share rows but are pooled separately; ``-1`` for an id of a sequence slot, which is
  not pooled), ``example`` int32 [m] (row of the batch). List columns contribute one occurrence per
  element; null scalars, null lists, empty lists and null elements contribute nothing.
- ``sequences``: for each sequence slot (``columns.sequences = {slot = max_len}``), int64
  [n, max_len]: the index (into ``keys``/``slots``/``field``/``example``) of each kept id, in list
  order from position 0, then ``-1`` as padding. A row keeps the *newest* ``max_len`` ids of its
  list (the last ones: lists are oldest first); the older ones are not occurrences (not pulled,
  not pushed) and are counted in :attr:`ReadStats.truncated_ids`. Kept ids are occurrences like
  any other: pulled, pushed and in the wide term.

:func:`dedup` turns a batch into the unique features to pull/push.

Bad input (see CONTRACT §1): a missing column, a wrong type or an unreadable file raises
:class:`trainer.partition.InputError` naming file and column. Bad rows (label not 0/1 or null,
show null or < 1, a dense value NaN or infinite as float32) raise :class:`BadRowError` when
``bad_rows="fail"``, naming file, column, row and the value seen of the first bad row in file order
(a worker reads its row groups in file order; with several workers, of the share where one is met
first); with ``"quarantine"`` they go to the quarantine Parquet file (the configured columns plus
``_file``, ``_row`` and ``_reason``: every problem of the row with its value, ``"; "``-joined), are
left out of the batches and counted in :attr:`BatchReader.stats`. Null dense cells take
``dense_fill`` and are counted.

Row groups smaller than :data:`COALESCE_ROWS` are read together (one decode, one pass of the
checks), so a file of many tiny row groups costs about what one large row group does.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field as dc_field
from typing import Iterable, Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainer.partition import InputError, WorkUnit, check_columns

__all__ = [
    "BadRowError",
    "Batch",
    "Dedup",
    "ReadStats",
    "BatchReader",
    "read_batches",
    "slot_ids",
    "pooling_fields",
    "dedup",
]


class BadRowError(InputError):
    """A row is bad and ``bad_rows = "fail"``: names file, column and row (0-based, in the file)."""


def slot_ids(columns) -> np.ndarray:
    """Table slot id of each slot column, int32 [F]: its index in ``columns.slots``, or the
    index of the first slot of its ``shared_tables`` group.

    >>> from types import SimpleNamespace as NS
    >>> slot_ids(NS(slots=("user", "item", "author"), shared_tables={"ids": ("user", "author")})).tolist()
    [0, 1, 0]
    """
    slots = list(columns.slots)
    ids = np.arange(len(slots), dtype=np.int32)
    for members in (getattr(columns, "shared_tables", None) or {}).values():
        first = slots.index(members[0])
        for s in members:
            ids[slots.index(s)] = first
    return ids


def pooling_fields(columns) -> np.ndarray:
    """Pooling position of each slot column, int32 [F]: its index in ``columns.pooled_slots``
    (the slots minus the sequence slots, in config order), or -1 for a sequence slot.

    >>> from types import SimpleNamespace as NS
    >>> pooling_fields(NS(slots=("user", "history", "item"), sequences={"history": 20})).tolist()
    [0, -1, 1]
    """
    sequences = getattr(columns, "sequences", None) or {}
    pooled = [s for s in columns.slots if s not in sequences]
    return np.array([pooled.index(s) if s in pooled else -1 for s in columns.slots], np.int32)


def _newest(parent: np.ndarray, n: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Of a list column's elements (``parent``: the row of each, non-decreasing, nulls dropped),
    which are among their row's last ``max_len`` (lists are oldest first), and the place of each
    in the kept sequence (0 = the oldest kept)."""
    counts = np.bincount(parent, minlength=n)
    rank = np.arange(len(parent)) - (np.cumsum(counts) - counts)[parent]
    dropped = np.maximum(counts - max_len, 0)[parent]
    return rank >= dropped, (rank - dropped).astype(np.int32)


@dataclass
class Batch:
    """One training batch (see the module docstring). Feature order is unspecified."""

    labels: np.ndarray  #: float32 [n], 0 or 1
    shows: np.ndarray  #: float32 [n], >= 1
    dense: np.ndarray  #: float32 [n, D], C-contiguous
    keys: np.ndarray  #: uint64 [m]
    slots: np.ndarray  #: int32 [m], table slot id
    field: np.ndarray  #: int32 [m], index in the pooled slots; -1 for a sequence slot's id
    example: np.ndarray  #: int32 [m], row in the batch
    has_shows: bool = False  #: whether a show column was configured
    sources: tuple = ()  #: ((path, first_row_in_file, rows), ...) of the (kept) rows, for messages
    #: sequence slot -> int64 [n, max_len]: occurrence index of each kept id, -1 = padding
    sequences: dict = dc_field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.keys.shape[0])


class Dedup(NamedTuple):
    """Unique features of a batch, sorted by (slot, key)."""

    keys: np.ndarray  #: uint64 [u]
    slots: np.ndarray  #: int32 [u]
    inverse: np.ndarray  #: int64 [m]: unique index of each occurrence (``keys[inverse] == batch.keys``)
    shows: np.ndarray  #: float32 [u]: sum of the shows of the occurrences
    clicks: np.ndarray  #: float32 [u]: sum of label * show of the occurrences


def dedup(batch: Batch) -> Dedup:
    """De-duplicate a batch's ``(slot, key)`` pairs.

    Show and click counters are summed per *occurrence* (an id listed twice in one row's list
    counts twice), with a row's click = label * show.

    Examples
    --------
    >>> b = Batch(labels=np.array([1, 0], np.float32), shows=np.ones(2, np.float32),
    ...           dense=np.zeros((2, 0), np.float32), keys=np.array([7, 7, 7], np.uint64),
    ...           slots=np.array([0, 0, 1], np.int32), field=np.array([0, 0, 1], np.int32),
    ...           example=np.array([0, 1, 1], np.int32))
    >>> d = dedup(b)
    >>> d.keys.tolist(), d.slots.tolist(), d.inverse.tolist(), d.shows.tolist(), d.clicks.tolist()
    ([7, 7], [0, 1], [0, 0, 1], [2.0, 1.0], [1.0, 0.0])
    """
    keys, slots = batch.keys, batch.slots
    m = keys.shape[0]
    order = np.lexsort((keys, slots))
    ks, ss = keys[order], slots[order]
    new = np.empty(m, bool)
    if m:
        new[0] = True
        np.not_equal(ks[1:], ks[:-1], out=new[1:])
        new[1:] |= ss[1:] != ss[:-1]
    uid = np.cumsum(new) - 1
    inverse = np.empty(m, np.int64)
    inverse[order] = uid
    u = int(uid[-1]) + 1 if m else 0
    occ_show = batch.shows[batch.example].astype(np.float64)
    occ_click = (batch.labels * batch.shows)[batch.example].astype(np.float64)
    return Dedup(
        keys=np.ascontiguousarray(ks[new]),
        slots=np.ascontiguousarray(ss[new]),
        inverse=inverse,
        shows=np.bincount(inverse, weights=occ_show, minlength=u).astype(np.float32),
        clicks=np.bincount(inverse, weights=occ_click, minlength=u).astype(np.float32),
    )


@dataclass
class ReadStats:
    """Counters of one reader (sum them across workers)."""

    rows_read: int = 0  #: rows read from Parquet
    rows: int = 0  #: rows delivered in batches
    bad_rows: int = 0  #: rows quarantined
    dense_nulls: int = 0  #: null dense cells filled with ``dense_fill`` (over all rows read)
    truncated_ids: int = 0  #: older ids of sequence slots beyond ``max_len`` (rows delivered)
    reasons: dict = dc_field(default_factory=dict)  #: bad rows per reason

    def as_dict(self) -> dict:
        return {"rows_read": self.rows_read, "rows": self.rows, "bad_rows": self.bad_rows,
                "dense_nulls": self.dense_nulls, "truncated_ids": self.truncated_ids,
                "reasons": dict(self.reasons)}


# ---------------------------------------------------------------------------------------------
# one row group -> one chunk


@dataclass
class _Chunk:
    labels: np.ndarray
    shows: np.ndarray
    dense: np.ndarray
    keys: np.ndarray  # field-major, example-sorted within a field
    slots: np.ndarray
    field: np.ndarray
    example: np.ndarray
    position: np.ndarray  # int32 [m]: place in the row's kept sequence (sequence columns only)
    field_starts: np.ndarray  # int64 [F+1], by slot column
    path: str
    row_map: np.ndarray  # file row of each kept row

    @property
    def num_rows(self) -> int:
        return int(self.labels.shape[0])

    def slice_parts(self, a: int, b: int):
        """Feature index ranges of rows [a, b), one per field."""
        out = []
        for f in range(len(self.field_starts) - 1):
            lo, hi = int(self.field_starts[f]), int(self.field_starts[f + 1])
            ex = self.example[lo:hi]
            out.append((lo + int(np.searchsorted(ex, a)), lo + int(np.searchsorted(ex, b))))
        return out


def _to_array(col) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


#: Row groups smaller than this are read together, up to this many rows: one decode and one pass
#: of the checks for all of them, so a file of many tiny row groups reads as fast as one of a few
#: large ones (a row group at least this large is read alone).
COALESCE_ROWS = 1 << 16


def read_groups(units: Iterable[WorkUnit], rows: int | None = None) -> Iterator[list[WorkUnit]]:
    """Consecutive units of one file, gathered up to `rows` rows (default
    :data:`COALESCE_ROWS`; a larger unit alone).

    >>> us = [WorkUnit("a", 0, 3, 0), WorkUnit("a", 2, 3, 6), WorkUnit("a", 3, 9, 9),
    ...       WorkUnit("b", 0, 1, 0)]
    >>> [[u.row_group for u in g] for g in read_groups(us, rows=6)]
    [[0, 2], [3], [0]]
    """
    rows = COALESCE_ROWS if rows is None else rows
    group: list[WorkUnit] = []
    grouped = 0
    for unit in units:
        if group and (unit.path != group[0].path or grouped + unit.rows > rows):
            yield group
            group, grouped = [], 0
        group.append(unit)
        grouped += unit.rows
    if group:
        yield group


class _RowProblems:
    """The bad cells found in a chunk, check by check (label, show, then dense columns in order).

    Each check is a mask of rows, the column, the generic reason (what ``ReadStats.reasons``
    counts) and how to say it for one row, with the value seen."""

    def __init__(self):
        self._checks: list[tuple[np.ndarray, str, str, object, np.ndarray | None]] = []

    def add(self, mask: np.ndarray, column: str, reason: str, say=None, values=None) -> None:
        if mask.any():
            self._checks.append((mask, column, reason, say, values))

    def bad(self, n: int) -> np.ndarray:
        out = np.zeros(n, bool)
        for mask, *_ in self._checks:
            out |= mask
        return out

    def _say(self, check, i: int) -> str:
        _mask, _column, reason, say, values = check
        return reason if say is None else say(values[i].item())

    def first_error(self, path: str, row_map: np.ndarray) -> "BadRowError":
        """The error naming the first bad row in file order (its first problem)."""
        first = min(int(np.flatnonzero(c[0])[0]) for c in self._checks)
        check = next(c for c in self._checks if c[0][first])
        row, column = int(row_map[first]), check[1]
        return BadRowError(f"{path}: column {column!r}, row {row}: {self._say(check, first)}",
                           file=path, column=column, row=row)

    def reasons_of(self, rows: np.ndarray) -> list[str]:
        """For each of `rows` (bad, increasing): every problem of the row with its value, "; "."""
        texts: list[list[str]] = [[] for _ in rows]
        for check in self._checks:
            for i in np.flatnonzero(check[0]):
                texts[int(np.searchsorted(rows, i))].append(f"{check[1]}: {self._say(check, i)}")
        return ["; ".join(t) for t in texts]

    def counts(self) -> dict[str, int]:
        """Bad rows per ``"column: reason"`` (a row with several problems counts under each)."""
        rows: dict[str, np.ndarray] = {}
        for mask, column, reason, _say, _values in self._checks:
            key = f"{column}: {reason}"
            rows[key] = rows[key] | mask if key in rows else mask
        return {key: int(mask.sum()) for key, mask in rows.items()}


def _got(what: str):
    return lambda value: f"{what}, got {value!r}"


def _non_finite(cell: str = ""):
    """How a dense cell that is not finite as float32 is named: NaN, +inf, -inf, or the float64
    value seen when only its float32 is infinite."""
    where = f" {cell}" if cell else ""

    def say(value: float) -> str:
        if value != value:
            return f"dense value{where} is NaN"
        if value in (float("inf"), float("-inf")):
            return f"dense value{where} is {value:+}"
        return f"dense value{where} {value!r} is infinite as float32"
    return say


class RowGroupReader:
    def __init__(self, columns, fs: pafs.FileSystem, bad_rows: str, dense_fill: float):
        self.columns = columns
        self.fs = fs
        self.bad_rows = bad_rows
        self.dense_fill = float(dense_fill)
        self.slot_ids = slot_ids(columns)
        self.sequences = dict(getattr(columns, "sequences", None) or {})
        self.fields = pooling_fields(columns)
        self.names = ([columns.label] if columns.label else []) + ([columns.show] if columns.show else []) + list(columns.slots) + list(columns.dense)
        self._open_path = None
        self._pf = None
        self._handle = None

    def _file(self, path: str) -> pq.ParquetFile:
        if path != self._open_path:
            self.close()
            try:
                self._handle = self.fs.open_input_file(path)
                self._pf = pq.ParquetFile(self._handle)
            except (pa.ArrowException, OSError) as exc:
                raise InputError(f"{path}: not a readable Parquet file: {exc}", file=path) from None
            self._open_path = path
            check_columns(self._pf.schema_arrow, self.columns, path)  # it may differ from planning
        return self._pf

    def close(self):
        if self._handle is not None:
            self._handle.close()
        self._handle = self._pf = self._open_path = None

    def read(self, units: list[WorkUnit], stats: ReadStats, quarantine) -> _Chunk:
        """Read `units` (row groups of one file, in file order: :func:`read_groups`) as one chunk."""
        path = units[0].path
        try:
            table = self._file(path).read_row_groups([u.row_group for u in units],
                                                     columns=self.names)
        except (pa.ArrowException, OSError) as exc:
            groups = ", ".join(str(u.row_group) for u in units)
            raise InputError(f"{path}: cannot read row group(s) {groups}: {exc}",
                             file=path) from None
        row_map = np.concatenate([np.arange(u.first_row, u.first_row + u.rows, dtype=np.int64)
                                  for u in units])
        if row_map.size != table.num_rows:
            raise InputError(f"{path}: row group(s) {[u.row_group for u in units]} hold "
                             f"{table.num_rows} rows, the footer read at planning said "
                             f"{row_map.size}", file=path)
        stats.rows_read += table.num_rows
        problems = _RowProblems()
        labels, shows = self._labels_and_shows(table, problems)
        dense = self._dense(table, problems, stats)
        bad = problems.bad(table.num_rows)
        if bad.any() and self.bad_rows == "fail":
            raise problems.first_error(path, row_map)
        keys, exs, flds, places, truncated = self._sparse(table)
        if bad.any():
            stats.bad_rows += int(bad.sum())
            for reason, count in problems.counts().items():
                stats.reasons[reason] = stats.reasons.get(reason, 0) + count
            quarantine.write(table.filter(pa.array(bad)), path, row_map[bad],
                             problems.reasons_of(np.flatnonzero(bad)))
            keep = ~bad
            new_index = np.cumsum(keep) - 1
            labels, shows, dense, row_map = labels[keep], shows[keep], dense[keep], row_map[keep]
            for i in range(len(keys)):
                kf = keep[exs[i]]
                keys[i], exs[i], flds[i] = keys[i][kf], new_index[exs[i][kf]], flds[i][kf]
                places[i] = places[i][kf]
            truncated = truncated[keep]
        stats.truncated_ids += int(truncated.sum())
        sizes = np.array([0] + [len(k) for k in keys], np.int64)
        column = np.repeat(np.arange(len(keys), dtype=np.int32), sizes[1:])
        return _Chunk(
            labels=labels, shows=shows, dense=np.ascontiguousarray(dense),
            keys=np.concatenate(keys) if keys else np.zeros(0, np.uint64),
            slots=self.slot_ids[column], field=np.concatenate(flds) if flds else np.zeros(0, np.int32),
            example=(np.concatenate(exs) if exs else np.zeros(0, np.int64)).astype(np.int32),
            position=np.concatenate(places) if places else np.zeros(0, np.int32),
            field_starts=np.cumsum(sizes), path=path, row_map=row_map,
        )

    def _labels_and_shows(self, table: pa.Table, problems: _RowProblems):
        """float32 labels and shows (1 without a show column); their bad rows into `problems`."""
        label = self.columns.label
        if label:
            lab = _to_array(table.column(label))
            lnull = lab.is_null().to_numpy(zero_copy_only=False)
            lval = pc.cast(lab, pa.float64()).fill_null(0).to_numpy(zero_copy_only=False)
            problems.add(lnull, label, "label is null")
            problems.add(~lnull & ~((lval == 0) | (lval == 1)), label, "label must be 0 or 1",
                         _got("label must be 0 or 1"), lval)
        else:  # "" = unlabelled rows, which only predict reads: labels read as 0
            lval = np.zeros(table.num_rows, np.float64)
        if not self.columns.show:
            return lval.astype(np.float32), np.ones(table.num_rows, np.float32)
        show = self.columns.show
        sh = _to_array(table.column(show))
        snull = sh.is_null().to_numpy(zero_copy_only=False)
        sval = pc.cast(sh, pa.float64()).fill_null(1).to_numpy(zero_copy_only=False)
        problems.add(snull, show, "show is null")
        problems.add(~snull & (sval < 1), show, "show must be an integer >= 1",
                     _got("show must be an integer >= 1"), sval)
        return lval.astype(np.float32), sval.astype(np.float32)

    def _dense(self, table: pa.Table, problems: _RowProblems, stats: ReadStats) -> np.ndarray:
        """float32 [n, D] dense features, nulls filled (and counted); a cell that is NaN or
        infinite as float32 is a problem of its row, named with the value seen."""
        n = table.num_rows
        out = []
        for name in self.columns.dense:
            arr = _to_array(table.column(name))
            if pa.types.is_fixed_size_list(arr.type):
                k = arr.type.list_size
                lists_null = np.repeat(arr.is_null().to_numpy(zero_copy_only=False), k)
                vals = arr.values.slice(arr.offset * k, len(arr) * k)
            else:
                k, lists_null, vals = 1, None, arr
            vnull = vals.is_null().to_numpy(zero_copy_only=False)
            seen = pc.cast(vals, pa.float64()).fill_null(self.dense_fill).to_numpy(
                zero_copy_only=False, writable=True)
            if lists_null is not None:
                vnull |= lists_null
                seen[lists_null] = self.dense_fill
            seen, vnull = seen.reshape(n, k), vnull.reshape(n, k)
            stats.dense_nulls += int(vnull.sum())
            with np.errstate(over="ignore"):  # a float64 beyond float32's range: inf, reported
                v = seen.astype(np.float32)
            bad = ~np.isfinite(v) & ~vnull
            for j in range(k):
                problems.add(bad[:, j], name, "dense value is NaN or infinite (as float32)",
                             _non_finite(f"(element {j})" if lists_null is not None else ""), seen[:, j])
            out.append(v)
        return np.concatenate(out, axis=1) if out else np.zeros((n, 0), np.float32)

    def _sparse(self, table: pa.Table):
        """Per slot column: keys (uint64), their rows, pooling field and sequence place; and the
        sequence ids truncated per row."""
        n = table.num_rows
        keys, exs, flds, places = [], [], [], []
        truncated = np.zeros(n, np.int64)  # per row
        for f, name in enumerate(self.columns.slots):
            arr = _to_array(table.column(name))
            if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
                flat = pc.list_flatten(arr)
                parent = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
            else:
                flat = arr
                parent = np.arange(n, dtype=np.int64)
            if flat.null_count:
                valid = flat.is_valid()
                parent = parent[valid.to_numpy(zero_copy_only=False)]
                flat = flat.filter(valid)
            k = flat.to_numpy(zero_copy_only=False)
            place = np.zeros(len(k), np.int32)
            if name in self.sequences:
                newest, place = _newest(parent, n, self.sequences[name])
                truncated += np.bincount(parent[~newest], minlength=n)
                k, parent, place = k[newest], parent[newest], place[newest]
            keys.append(k.view(np.uint64) if k.dtype == np.int64 else k.astype(np.uint64, copy=False))
            exs.append(parent.astype(np.int64, copy=False))
            flds.append(np.full(len(k), self.fields[f], np.int32))
            places.append(place)
        return keys, exs, flds, places, truncated


class _Quarantine:
    """Lazily opened quarantine Parquet writer."""

    def __init__(self, path: str | None):
        self.path = path
        self.writer = None
        self.schema = None

    def write(self, table: pa.Table, file: str, rows: np.ndarray, reasons: np.ndarray):
        if self.path is None:
            raise ValueError("bad_rows='quarantine' needs a quarantine_path")
        table = table.append_column("_file", pa.array([file] * table.num_rows, pa.string()))
        table = table.append_column("_row", pa.array(rows, pa.int64()))
        table = table.append_column("_reason", pa.array(list(reasons), pa.string()))
        if self.writer is not None and table.schema != self.schema:
            try:
                table = table.cast(self.schema)
            except (pa.ArrowException, ValueError) as exc:
                raise InputError(f"{file}: bad rows cannot join quarantine file {self.path} "
                                 f"(column types differ from an earlier file): {exc}", file=file) from None
        with self._naming():
            if self.writer is None:
                if "://" in self.path:
                    fs, where = pafs.FileSystem.from_uri(self.path)
                else:
                    fs, where = pafs.LocalFileSystem(), os.path.abspath(self.path)
                    os.makedirs(os.path.dirname(where), exist_ok=True)
                self.schema = table.schema
                self.writer = pq.ParquetWriter(where, self.schema, filesystem=fs)
            self.writer.write_table(table)

    def close(self):
        if self.writer is not None:
            with self._naming():
                self.writer.close()
            self.writer = None

    @contextmanager
    def _naming(self):
        """A failed write (a full disk: Arrow's message names no file) names the quarantine file."""
        try:
            yield
        except (OSError, pa.ArrowException) as exc:
            if self.path in str(exc):
                raise
            raise OSError(f"quarantine file {self.path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------


class BatchReader:
    """Iterate the batches of a worker's work units.

    Parameters
    ----------
    units : iterable of WorkUnit
        From :func:`trainer.partition.assign_work` (read in the given order).
    columns : ColumnsConfig
        ``cfg.columns``: ``label``, ``show``, ``slots``, ``dense``, ``shared_tables``, ``dense_fill``,
        ``bad_rows``, ``sequences``.
    batch_size : int
    filesystem : pyarrow.fs.FileSystem, optional
        Of the unit paths (``trainer.partition.locate(...).fs``); default local.
    quarantine_path : str, optional
        Parquet file for bad rows; required when ``columns.bad_rows == "quarantine"`` and a bad
        row occurs. Written (and closed) only if there are bad rows.

    Attributes
    ----------
    stats : ReadStats
        Final once iteration ends.

    Examples
    --------
    ``for batch in BatchReader(units[w], cfg.columns, cfg.train.batch_size, filesystem=part.fs,
    quarantine_path=...)``: see ``tests/trainer/test_reader.py``.
    """

    def __init__(self, units: Iterable[WorkUnit], columns, batch_size: int, *,
                 filesystem: pafs.FileSystem | None = None, quarantine_path: str | None = None):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        bad_rows = getattr(columns, "bad_rows", "fail")
        if bad_rows not in ("fail", "quarantine"):
            raise ValueError(f"columns.bad_rows: expected 'fail' or 'quarantine', got {bad_rows!r}")
        self.units = list(units)
        self.columns = columns
        self.batch_size = int(batch_size)
        self.fs = filesystem or pafs.LocalFileSystem()
        self.quarantine_path = quarantine_path
        self.stats = ReadStats()
        self._rg = RowGroupReader(columns, self.fs, bad_rows, getattr(columns, "dense_fill", 0.0))
        self.has_shows = bool(columns.show)
        self._sequences = tuple((getattr(columns, "sequences", None) or {}).items())

    def __iter__(self) -> Iterator[Batch]:
        quarantine = _Quarantine(self.quarantine_path)
        parts: list[tuple[_Chunk, int, int]] = []
        pending = 0
        try:
            for group in read_groups(self.units):
                chunk = self._rg.read(group, self.stats, quarantine)
                a = 0
                while a < chunk.num_rows:
                    b = min(chunk.num_rows, a + self.batch_size - pending)
                    parts.append((chunk, a, b))
                    pending += b - a
                    a = b
                    if pending == self.batch_size:
                        yield self._assemble(parts)
                        parts, pending = [], 0
            if pending:
                yield self._assemble(parts)
        finally:
            self._rg.close()
            quarantine.close()

    def _assemble(self, parts) -> Batch:
        labels, shows, dense, keys, slots, fields, examples, sources = [], [], [], [], [], [], [], []
        rows = sum(b - a for _, a, b in parts)
        sequences = {name: np.full((rows, max_len), -1, np.int64) for name, max_len in self._sequences}
        offset = occurrences = 0
        for chunk, a, b in parts:
            labels.append(chunk.labels[a:b])
            shows.append(chunk.shows[a:b])
            dense.append(chunk.dense[a:b])
            for column, (lo, hi) in enumerate(chunk.slice_parts(a, b)):
                keys.append(chunk.keys[lo:hi])
                slots.append(chunk.slots[lo:hi])
                fields.append(chunk.field[lo:hi])
                examples.append(chunk.example[lo:hi] + np.int32(offset - a))
                name = self.columns.slots[column]
                if name in sequences:
                    sequences[name][examples[-1], chunk.position[lo:hi]] = np.arange(
                        occurrences, occurrences + hi - lo)
                occurrences += hi - lo
            sources += _runs(chunk.path, chunk.row_map[a:b])
            offset += b - a
        self.stats.rows += offset

        def cat(xs, dtype):
            return np.concatenate(xs) if xs else np.zeros(0, dtype)

        return Batch(
            labels=cat(labels, np.float32), shows=cat(shows, np.float32),
            dense=np.ascontiguousarray(np.concatenate(dense, axis=0)),
            keys=cat(keys, np.uint64), slots=cat(slots, np.int32), field=cat(fields, np.int32),
            example=cat(examples, np.int32), has_shows=self.has_shows, sources=tuple(sources),
            sequences=sequences,
        )


def _runs(path: str, rows: np.ndarray) -> list[tuple[str, int, int]]:
    """``(path, first row, count)`` of each run of consecutive file rows in `rows`.

    >>> _runs("a", np.array([4, 5, 6, 9, 10]))
    [('a', 4, 3), ('a', 9, 2)]
    """
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(rows)]])
    return [(path, int(rows[a]), int(b - a)) for a, b in zip(starts, ends)]


def read_batches(units, columns, batch_size, *, filesystem=None, quarantine_path=None) -> Iterator[Batch]:
    """Shorthand for ``iter(BatchReader(...))`` when the stats are not needed."""
    return iter(BatchReader(units, columns, batch_size, filesystem=filesystem, quarantine_path=quarantine_path))
