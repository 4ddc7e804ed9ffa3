"""Hourly input partitions: where they are, whether they are complete, what they hold.

The partition of hour ``h`` is ``<data_root>/dt=YYYY-MM-DD/hour=HH/`` (:mod:`trainer.hours`). It is
complete once the empty marker ``_SUCCESS`` exists in it; its data files are the files whose names
do not start with ``_`` or ``.``. ``data_root`` is a local path, ``s3://bucket/prefix`` (opened with
:class:`pyarrow.fs.S3FileSystem` from the config's ``[s3]`` section, else the standard AWS
environment variables) or any other URI pyarrow can open (``hdfs://…``) through
:meth:`pyarrow.fs.FileSystem.from_uri`. A missing bucket or refused credentials raise
:class:`StorageError`, one line naming the URI.

Typical use (rank 0 of the job)::

    part = locate(cfg.data_root, hour, cfg.s3)
    if not is_complete(part): ...
    files = list_files(part)                       # names, sizes, sha256 (for the model store)
    files, dense_dim = check_schema(part, files, cfg.columns)   # footers only
    units = assign_work(files, cfg.mpi.workers)    # units[w]: the (file, row group)s of worker w

The column type rules used here are also the reader's (:func:`column_type_problem`).
"""

from __future__ import annotations

import hashlib
import heapq
import os
from dataclasses import dataclass, replace
from typing import NamedTuple

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainer.hours import hour_str, partition_relpath

__all__ = [
    "SUCCESS",
    "InputError",
    "SchemaError",
    "StorageError",
    "open_root",
    "Partition",
    "locate",
    "is_complete",
    "DataFile",
    "list_files",
    "sha256_of",
    "column_type_problem",
    "dense_width",
    "check_schema",
    "WorkUnit",
    "assign_work",
]

#: Name of the completion marker.
SUCCESS = "_SUCCESS"


#: Exit code of a command (or MPI job) that failed because of the hour's data: retrying cannot
#: help until the data is fixed, so orchestrators should not retry it.
EXIT_BAD_INPUT = 3


class InputError(ValueError):
    """Bad input data. The message names the file, and the column and row where they apply."""

    def __init__(self, message: str, *, file: str = "", column: str = "", row: int | None = None):
        super().__init__(message)
        self.file, self.column, self.row = file, column, row


class SchemaError(InputError):
    """A configured column is missing or has a type streamtrain cannot read."""


class StorageError(InputError):
    """The storage behind ``data_root`` refuses us: no such bucket, or credentials denied.

    Retrying cannot help until the config (or the bucket) is fixed, as with bad data."""


def open_root(data_root: str, s3=None) -> tuple[pafs.FileSystem, str]:
    """The filesystem and base path of ``data_root`` (a local path or a pyarrow URI).

    ``s3`` is the config's :class:`trainer.config.S3Config` (endpoint, region, credentials) for an
    ``s3://bucket/prefix`` root; ``None`` = the AWS defaults and environment variables.

    >>> fs, path = open_root("/tmp/x/../data")
    >>> type(fs).__name__, path
    ('LocalFileSystem', '/tmp/data')
    """
    if str(data_root).startswith("s3://"):
        return _s3_filesystem(s3), str(data_root)[len("s3://"):].rstrip("/")
    if "://" in str(data_root):
        try:
            fs, path = pafs.FileSystem.from_uri(str(data_root))
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise InputError(f"data_root {data_root!r}: cannot open: {exc}") from None
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(os.fspath(data_root))


def _s3_filesystem(s3) -> pafs.S3FileSystem:
    """An S3 filesystem from the ``[s3]`` settings; empty settings fall back to the AWS SDK's
    chain (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``~/.aws``, ...)."""
    options: dict = {}
    if s3 is not None:
        if s3.endpoint:
            scheme, _, address = s3.endpoint.partition("://")
            options.update(scheme=scheme, endpoint_override=address.rstrip("/"))
        if s3.region:
            options["region"] = s3.region
        if s3.access_key:
            options.update(access_key=s3.access_key, secret_key=s3.secret_key,
                           session_token=s3.session_token or None)
        options.update(connect_timeout=s3.connect_timeout_seconds,
                       request_timeout=s3.request_timeout_seconds)
    return pafs.S3FileSystem(**options)


#: What S3 says (inside pyarrow's OSError) when the bucket is missing or the credentials are bad.
_REFUSALS = {"NO_SUCH_BUCKET": "no such bucket", "ACCESS_DENIED": "access denied",
             "HTTP status 403": "access denied", "INVALID_ACCESS_KEY_ID": "access denied",
             "SIGNATURE_DOES_NOT_MATCH": "access denied", "InvalidAccessKeyId": "access denied"}


def _storage_error(location: str, exc: OSError) -> InputError | OSError:
    """A :class:`StorageError` naming ``location`` when ``exc`` is a refusal, else ``exc``."""
    for marker, why in _REFUSALS.items():
        if marker in str(exc):
            return StorageError(f"{location}: {why} ({str(exc).splitlines()[0]})", file=location)
    return exc


@dataclass(frozen=True)
class Partition:
    """The partition of one data hour."""

    data_root: str  #: as configured
    hour: int  #: hour index
    fs: pafs.FileSystem = None  # type: ignore[assignment]
    path: str = ""  #: path of the partition folder inside ``fs``

    @property
    def hour_str(self) -> str:
        return hour_str(self.hour)

    @property
    def location(self) -> str:
        """Printable location: ``<data_root>/dt=…/hour=…`` (a URI for remote roots)."""
        return f"{str(self.data_root).rstrip('/')}/{partition_relpath(self.hour)}"

    def file_path(self, name: str) -> str:
        return f"{self.path}/{name}"


def locate(data_root: str, hour: int, s3=None) -> Partition:
    """The :class:`Partition` of hour index ``hour`` under ``data_root`` (nothing is read);
    ``s3`` = the config's ``[s3]`` settings for an ``s3://`` root."""
    fs, base = open_root(data_root, s3)
    return Partition(data_root=str(data_root), hour=int(hour), fs=fs, path=f"{base}/{partition_relpath(hour)}")


def is_complete(part: Partition) -> bool:
    """One cheap check: does ``_SUCCESS`` exist in the partition?

    On S3 a missing marker costs one more request, to tell "not there yet" from "no such
    bucket" (a HEAD of a key in a missing bucket only says not found).
    """
    try:
        if part.fs.get_file_info(part.file_path(SUCCESS)).type == pafs.FileType.File:
            return True
        _check_bucket(part)
    except OSError as exc:
        raise _storage_error(part.location, exc) from None
    return False


def _check_bucket(part: Partition) -> None:
    """On S3, raise :class:`StorageError` when the partition's bucket does not exist."""
    if isinstance(part.fs, pafs.S3FileSystem):
        bucket = part.path.split("/", 1)[0]
        if part.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise StorageError(f"{part.location}: no such bucket {bucket!r}", file=part.location)


@dataclass(frozen=True)
class DataFile:
    """One data file of a partition."""

    name: str  #: file name inside the partition folder
    path: str  #: path inside the partition's filesystem
    bytes: int
    sha256: str = ""  #: hex digest ("" when not computed)
    row_groups: tuple[int, ...] = ()  #: rows of each row group (filled by :func:`check_schema`)

    @property
    def rows(self) -> int:
        return sum(self.row_groups)

    def record(self) -> dict:
        """What the model store records: ``{"name", "bytes", "sha256"}``."""
        return {"name": self.name, "bytes": self.bytes, "sha256": self.sha256}


def sha256_of(fs: pafs.FileSystem, path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed in ``chunk`` bytes."""
    h = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def list_files(part: Partition, checksums: bool = True) -> list[DataFile]:
    """The partition's data files, sorted by name, with sizes and (optionally) sha256.

    Raises
    ------
    InputError
        The partition folder does not exist, or a file cannot be read.
    """
    try:
        info = part.fs.get_file_info(part.path)
        if info.type != pafs.FileType.Directory:
            _check_bucket(part)
            raise InputError(f"partition {part.location}: no such folder", file=part.location)
        listed = part.fs.get_file_info(pafs.FileSelector(part.path, recursive=False))
    except OSError as exc:
        raise _storage_error(part.location, exc) from None
    out = []
    for fi in listed:
        if fi.type != pafs.FileType.File or fi.base_name.startswith(("_", ".")):
            continue
        digest = ""
        if checksums:
            try:
                digest = sha256_of(part.fs, fi.path)
            except OSError as exc:
                raise InputError(f"{part.location}/{fi.base_name}: cannot read: {exc}",
                                 file=fi.path) from None
        out.append(DataFile(name=fi.base_name, path=fi.path, bytes=int(fi.size), sha256=digest))
    return sorted(out, key=lambda f: f.name)


# ---------------------------------------------------------------------------------------------
# column types (shared with trainer.reader)


def _int64ish(t: pa.DataType) -> bool:
    return t in (pa.int64(), pa.uint64())


def column_type_problem(role: str, t: pa.DataType) -> str | None:
    """Why a column of Arrow type ``t`` cannot serve as ``role``, or ``None`` if it can.

    Roles: ``"label"`` (bool, integer or float), ``"show"`` (integer), ``"slot"`` (int64/uint64 or a
    list/large_list of them), ``"sequence"`` (a slot of ``columns.sequences``: a list/large_list of
    int64/uint64), ``"dense"`` (integer or float, or a fixed-size list of them).

    >>> column_type_problem("slot", pa.list_(pa.int64())) is None
    True
    >>> column_type_problem("slot", pa.int32())
    'expected int64, uint64 or a list of them, got int32'
    """
    if role == "label":
        ok = pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)
        return None if ok else f"expected bool, integer or float, got {t}"
    if role == "show":
        return None if pa.types.is_integer(t) else f"expected an integer type, got {t}"
    if role == "slot":
        if _int64ish(t):
            return None
        if (pa.types.is_list(t) or pa.types.is_large_list(t)) and _int64ish(t.value_type):
            return None
        return f"expected int64, uint64 or a list of them, got {t}"
    if role == "sequence":
        if (pa.types.is_list(t) or pa.types.is_large_list(t)) and _int64ish(t.value_type):
            return None
        return f"a sequence slot must be a list of int64 or uint64, got {t}"
    if role == "dense":
        def numeric(x):
            return pa.types.is_integer(x) or pa.types.is_floating(x)

        if numeric(t) or (pa.types.is_fixed_size_list(t) and numeric(t.value_type)):
            return None
        return f"expected a numeric scalar or a fixed-size list of numbers, got {t}"
    raise ValueError(f"unknown column role {role!r}")


def dense_width(t: pa.DataType) -> int:
    """Dense features contributed by a dense column of type ``t`` (1, or the fixed list size)."""
    return t.list_size if pa.types.is_fixed_size_list(t) else 1


def _roles(columns) -> list[tuple[str, str]]:
    roles = [(columns.label, "label")] if columns.label else []  # "" = unlabelled (predict)
    if columns.show:
        roles.append((columns.show, "show"))
    sequences = getattr(columns, "sequences", None) or {}
    roles += [(s, "sequence" if s in sequences else "slot") for s in columns.slots]
    roles += [(d, "dense") for d in columns.dense]
    return roles


def check_columns(schema: pa.Schema, columns, file: str) -> tuple[int, ...]:
    """Check ``schema`` holds every configured column with a usable type.

    Returns the dense width of each dense column. Raises :class:`SchemaError` naming file and
    column.
    """
    for name, role in _roles(columns):
        idx = schema.get_field_index(name)
        if idx < 0:
            raise SchemaError(f"{file}: column {name!r} ({role}) is missing", file=file, column=name)
        problem = column_type_problem(role, schema.field(idx).type)
        if problem:
            raise SchemaError(f"{file}: column {name!r} ({role}): {problem}", file=file, column=name)
    return tuple(dense_width(schema.field(d).type) for d in columns.dense)


def check_schema(part: Partition, files: list[DataFile], columns) -> tuple[list[DataFile], int]:
    """Read only the Parquet footers: check columns and types, collect row-group sizes.

    Parameters
    ----------
    part : Partition
    files : list of DataFile
        From :func:`list_files`.
    columns : ColumnsConfig
        ``cfg.columns`` (``label``, ``show``, ``slots``, ``dense``).

    Returns
    -------
    files : list of DataFile
        The same files with ``row_groups`` filled.
    dense_dim : int
        Total dense input width (``len(columns.dense)`` when every dense column is a scalar).

    Raises
    ------
    SchemaError
        A configured column is missing or of a wrong type (names file and column), or the dense
        widths differ between files.
    InputError
        A file is not readable Parquet.
    """
    out, widths = [], None
    for f in files:
        try:
            with part.fs.open_input_file(f.path) as handle:
                meta = pq.ParquetFile(handle).metadata
                schema = meta.schema.to_arrow_schema()
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{f.path}: not a readable Parquet file: {exc}", file=f.path) from None
        w = check_columns(schema, columns, f.path)
        if widths is not None and w != widths:
            bad = next(d for d, a, b in zip(columns.dense, w, widths) if a != b)
            raise SchemaError(f"{f.path}: dense column {bad!r} has a different width than in {out[0].path}",
                              file=f.path, column=bad)
        widths = w
        rgs = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        out.append(replace(f, row_groups=rgs))
    dense_dim = sum(widths) if widths is not None else len(columns.dense)
    return out, dense_dim


# ---------------------------------------------------------------------------------------------
# work assignment


class WorkUnit(NamedTuple):
    """One row group of one file: the unit of work of a worker."""

    path: str  #: file path inside the partition's filesystem
    row_group: int
    rows: int
    first_row: int  #: row index (in the file) of the row group's first row


def assign_work(files: list[DataFile], num_workers: int) -> list[list[WorkUnit]]:
    """Deterministically spread all row groups over workers, balanced by row count.

    Greedy longest-first: row groups by decreasing rows (ties: file name, then row-group index)
    each go to the least-loaded worker (ties: the lowest worker). Each worker then reads its units
    in (file, row group) order. Every row group is assigned exactly once; empty row groups are
    skipped.

    Parameters
    ----------
    files : list of DataFile
        With ``row_groups`` filled (:func:`check_schema`).
    num_workers : int

    Returns
    -------
    list of list of WorkUnit
        ``result[w]`` is worker ``w``'s work (possibly empty).

    Examples
    --------
    >>> fs = [DataFile("a", "/p/a", 0, row_groups=(100, 50)), DataFile("b", "/p/b", 0, row_groups=(60,))]
    >>> [[(u.path, u.row_group) for u in w] for w in assign_work(fs, 2)]
    [[('/p/a', 0)], [('/p/a', 1), ('/p/b', 0)]]
    """
    if int(num_workers) < 1:
        raise ValueError(f"num_workers: expected >= 1, got {num_workers}")
    units, order = [], []
    for fi, f in enumerate(sorted(files, key=lambda f: f.name)):
        first = 0
        for rg, rows in enumerate(f.row_groups):
            if rows > 0:
                units.append(WorkUnit(f.path, rg, int(rows), first))
                order.append((fi, rg))
            first += rows
    heap = [(0, w) for w in range(num_workers)]
    out: list[list[tuple]] = [[] for _ in range(num_workers)]
    for i in sorted(range(len(units)), key=lambda i: (-units[i].rows, order[i])):
        load, w = heapq.heappop(heap)
        out[w].append((order[i], units[i]))
        heapq.heappush(heap, (load + units[i].rows, w))
    return [[u for _, u in sorted(ws, key=lambda t: t[0])] for ws in out]
