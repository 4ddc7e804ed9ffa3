"""Resolving and reading the committed chain: newest base, then every later delta in order.

On each server rank at job start::

    chain = load_chain(model_dir, num_shards=cfg.table_num_shards)
    my_shards = sharding.shards_of_server(rank, chain.num_shards, num_servers)
    chain.load_into(table, my_shards)  # per shard: base, then deltas, through SparseTable.load
    dense = chain.read_dense()                         # the head's dense parameters

``load_chain`` checks every link (ledger order, parent, kind, meta.json pinned by sha256 in the
ledger, num_shards, every listed file present with its recorded size). ``read_shard`` /
``read_dense`` check the CRC-32 of the bytes they parse. ``Chain.verify()`` re-checks every file
(several at once, streamed through a small buffer: nothing is parsed, nothing kept).
Anything wrong raises a ``ChainError`` subclass naming the version (and file), never skips it.
"""
from __future__ import annotations

import io
import json
import os

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import columns as C
from .errors import (ChainOrderError, CorruptFileError, MissingFileError, MissingVersionError,
                     SchemaError, ShardCountError, StoreError)
from .layout import (CHECKSUM_ALGO, DENSE, META, READABLE_SCHEMA_VERSIONS, StoreLayout, crc32,
                     sha256_hex, shard_file_name)
from .ledger import ChainState, VersionRecord, read_state


def read_meta_bytes(vdir: Path, what: str, missing_exc=MissingVersionError) -> tuple[dict, bytes]:
    """Read and parse ``vdir/meta.json``; ``what`` names the version in errors."""
    try:
        raw = (vdir / META).read_bytes()
    except FileNotFoundError:
        if not vdir.is_dir():
            raise missing_exc(f"{what}: folder {vdir} does not exist") from None
        raise missing_exc(f"{what}: {vdir / META} does not exist") from None
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise CorruptFileError(f"{what}: {vdir / META} is not JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("schema_version") not in READABLE_SCHEMA_VERSIONS:
        raise CorruptFileError(f"{what}: {vdir / META} has schema_version "
                               f"{meta.get('schema_version') if isinstance(meta, dict) else None}, "
                               f"expected one of {list(READABLE_SCHEMA_VERSIONS)}")
    if meta.get("checksum_algo", CHECKSUM_ALGO) != CHECKSUM_ALGO:
        raise CorruptFileError(f"{what}: checksum_algo {meta.get('checksum_algo')!r} unsupported")
    return meta, raw


def check_meta_files(vdir: Path, meta: dict, what: str, *, full: bool,
                     threads: int | None = None) -> None:
    """Every listed file exists with its size (and, if ``full``, its checksum); shards complete.

    ``full`` checks the files on ``threads`` threads (default ``columns.default_threads()``);
    the error raised is the first bad file's in meta.json order.
    """
    files = meta.get("files")
    n = meta.get("num_shards")
    if not isinstance(files, list) or not isinstance(n, int):
        raise CorruptFileError(f"{what}: meta.json lacks 'files' / 'num_shards'")
    shards = sorted(f.get("shard", -1) for f in files if f.get("role", "shard") == "shard")
    if shards != list(range(n)):
        raise CorruptFileError(f"{what}: meta.json lists shards {shards[:10]}..., expected 0..{n - 1} once")
    if sum(1 for f in files if f.get("role") == "dense") != 1:
        raise CorruptFileError(f"{what}: meta.json must list exactly one dense file")
    for f in files:
        p = vdir / f["name"]
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            raise MissingFileError(f"{what}: file {p} listed in meta.json does not exist") from None
        if size != f["bytes"]:
            raise CorruptFileError(f"{what}: file {p} has {size} bytes, meta.json says {f['bytes']}")
    if full:
        threads = C.default_threads() if threads is None else max(1, int(threads))
        if threads == 1 or len(files) < 2:
            for f in files:
                verify_file(vdir / f["name"], f, what)
            return
        with ThreadPoolExecutor(min(threads, len(files)), thread_name_prefix="verify") as pool:
            futures = [pool.submit(verify_file, vdir / f["name"], f, what) for f in files]
            for fut in futures:
                fut.result()


#: Files are read and checksummed this much at a time: crc32 reads each piece right after
#: ``readinto`` copied it, while it is still in cache, and ``verify_file`` holds no whole file.
#: Piece by piece is no slower than whole files, and faster on large ones (docs/benchmarks.md,
#: "Why the store is built as it is", has the piece sizes tried).
READ_CHUNK = 1 << 20


def _read_checked(path: Path, entry: dict, what: str, keep: bool):
    """Read ``path`` checking its size and CRC-32 (``layout.checksum``'s: zlib CRC-32 as 8 hex
    digits) against its meta.json entry, ``READ_CHUNK`` at a time. ``keep``: into one buffer of
    the whole file from Arrow's pool (``columns.empty`` says why), returned; else through one
    piece-sized buffer, nothing kept. Either way the checksum is of the bytes in the buffer."""
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise MissingFileError(f"{what}: file {path} listed in meta.json does not exist") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size != entry["bytes"]:
            raise CorruptFileError(f"{what}: file {path} has {size} bytes, meta.json says {entry['bytes']}")
        buf = pa.allocate_buffer(size if keep else min(READ_CHUNK, size))
        view = memoryview(buf)
        crc = total = 0
        while True:
            piece = view[total:total + READ_CHUNK] if keep else view
            got = f.readinto(piece) if len(piece) else 0
            if not got:
                break
            crc = crc32(piece[:got], crc)
            total += got
        extra = f.read(1)
    if total != size or extra:
        raise CorruptFileError(f"{what}: file {path} changed size while read ({total} bytes"
                               f"{' and more' if extra else ''}, meta.json says {entry['bytes']})")
    got = f"{crc & 0xFFFFFFFF:08x}"
    if got != entry["checksum"]:
        raise CorruptFileError(f"{what}: file {path} checksum {CHECKSUM_ALGO} {got} != recorded "
                               f"{entry['checksum']} (corrupt)")
    return buf if keep else None


def verify_file(path: Path, entry: dict, what: str) -> None:
    """Check a file's size and CRC-32 against its meta.json entry (streamed: nothing kept)."""
    _read_checked(path, entry, what, keep=False)


def read_verified(path: Path, entry: dict, what: str) -> pa.Buffer:
    """Read a whole file and check its size and CRC-32 against its meta.json entry; returns
    exactly the bytes that were checked."""
    return _read_checked(path, entry, what, keep=True)


@dataclass
class VersionMeta:
    """A version of the loaded chain: the ledger record and its verified meta.json."""

    record: VersionRecord
    meta: dict
    dir: Path

    @property
    def version(self) -> str:
        return self.record.version

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def hour(self) -> int:
        return self.record.hour

    def file_entry(self, name: str) -> dict:
        for f in self.meta["files"]:
            if f["name"] == name:
                return f
        raise CorruptFileError(f"version {self.version}: meta.json does not list {name}")


def read_checked_meta(layout: StoreLayout, rec: VersionRecord) -> dict:
    """The ``meta.json`` of committed version ``rec``, checked against its ledger line: the sha256
    the ledger pins, and version, kind, hour, parent and base. What every reader of a version's
    meta goes through (the loader, the UI); a folder that is gone is ``MissingVersionError``."""
    meta, raw = read_meta_bytes(layout.version_dir(rec.version), _what(rec))
    if rec.meta_sha256 and sha256_hex(raw) != rec.meta_sha256:
        raise CorruptFileError(f"{_what(rec)}: {layout.version_dir(rec.version) / META} sha256 "
                               f"differs from the ledger (corrupt or replaced)")
    for key, want in (("version", rec.version), ("kind", rec.kind), ("hour", rec.hour),
                      ("parent", rec.parent), ("base", rec.base)):
        if meta.get(key) != want:
            raise ChainOrderError(f"{_what(rec)}: meta.json {key}={meta.get(key)!r} but the ledger "
                                  f"says {want!r}")
    return meta


def _what(rec: VersionRecord) -> str:
    return f"version {rec.version} ({rec.kind} {rec.hour_str})"


def check_version(layout: StoreLayout, rec: VersionRecord, *, full: bool = False) -> VersionMeta:
    """Check one committed version against its ledger line and its files; returns its meta."""
    meta = read_checked_meta(layout, rec)
    vdir = layout.version_dir(rec.version)
    check_meta_files(vdir, meta, _what(rec), full=full)
    return VersionMeta(rec, meta, vdir)


class Chain:
    """A resolved, checked chain: ``versions`` = [base, delta, delta, ...] up to ``head``."""

    def __init__(self, layout: StoreLayout, state: ChainState, versions: list[VersionMeta]):
        self.layout = layout
        self.state = state
        self.versions = versions
        self._by_name = {v.version: v for v in versions}

    @property
    def head(self) -> str | None:
        return self.versions[-1].version if self.versions else None

    @property
    def base(self) -> str | None:
        return self.versions[0].version if self.versions else None

    @property
    def num_shards(self) -> int | None:
        return self.versions[0].meta["num_shards"] if self.versions else None

    @property
    def dim(self) -> int | None:
        return self.versions[0].meta["dim"] if self.versions else None

    @property
    def opt_width(self) -> int | None:
        return self.versions[0].meta.get("opt_width") if self.versions else None

    def __len__(self) -> int:
        return len(self.versions)

    def __repr__(self) -> str:
        return f"Chain({[v.version for v in self.versions]})"

    def get(self, version: str) -> VersionMeta:
        try:
            return self._by_name[version]
        except KeyError:
            raise MissingVersionError(f"version {version} is not in this chain "
                                      f"{[v.version for v in self.versions]}") from None

    def admitted_rows(self, shard_ids, version: str | None = None) -> int:
        """Admitted rows (state 0) of ``shard_ids`` in ``version`` (default: the base), from
        meta.json: what ``SparseTable.reserve`` wants before the chain is loaded."""
        vm = self.get(version or self.base) if self.versions else None
        if vm is None:
            return 0
        want = {int(s) for s in shard_ids}
        return sum(int(f.get("counts", {}).get("admitted", 0)) for f in vm.meta["files"]
                   if f.get("role", "shard") == "shard" and f.get("shard") in want)

    def read_shard(self, version: str, shard_id: int, columns=None, writable: bool = False,
                   use_threads: bool = True) -> dict:
        """Columns of ``shard_id`` in ``version`` (verified CRC), as pstable ``load`` takes them.

        ``columns`` restricts the decoded columns; ``writable=True`` returns owned, writable copies
        (the default is read-only views of Arrow memory: no copy). ``use_threads``: Arrow decodes
        the columns on its thread pool (``iter_shards`` turns it off: it reads files in parallel).
        """
        vm = self.get(version)
        name = shard_file_name(shard_id)
        what = f"version {version} ({vm.kind} {vm.record.hour_str}) shard {shard_id}"
        entry = vm.file_entry(name)
        data = read_verified(vm.dir / name, entry, what)
        try:
            cols = C.decode_parquet(data, where=f"{what} {vm.dir / name}", columns=columns,
                                    opt_width=vm.meta.get("opt_width"), use_threads=use_threads)
            del data
        except SchemaError as e:
            raise CorruptFileError(str(e)) from None
        n = next(iter(cols.values())).shape[0] if cols else 0
        if cols and n != entry["rows"]:
            raise CorruptFileError(f"{what}: {n} rows, meta.json says {entry['rows']}")
        if "weights" in cols and cols["weights"].shape[1] != 1 + vm.meta["dim"]:
            raise CorruptFileError(f"{what}: weights width {cols['weights'].shape[1]} != 1+dim {1 + vm.meta['dim']}")
        if writable:
            cols = {k: np.array(v, copy=True) for k, v in cols.items()}
        return cols

    def iter_shard(self, shard_id: int, columns=None):
        """``(version, columns)`` of ``shard_id`` for every version, base first."""
        for v in self.versions:
            yield v.version, self.read_shard(v.version, shard_id, columns=columns)

    def iter_shards(self, shard_ids, columns=None, *, threads: int | None = None,
                    prefetch: int | None = None):
        """``(shard, version, columns)`` for each shard of ``shard_ids`` in that order and, within
        a shard, every version base first (the order ``SparseTable.load`` needs), as
        ``read_shard`` gives them; the files ahead are read, CRC-checked and decoded on
        ``threads`` threads while the caller uses the current one.

        At most ``prefetch`` files (default ``threads + 1``) are in flight or decoded and waiting.
        A bad file raises its ``ChainError`` when its turn comes (the files before it were
        yielded); closing the iterator early cancels what has not started.
        """
        jobs = iter([(int(s), v.version) for s in shard_ids for v in self.versions])
        threads = C.default_threads() if threads is None else max(1, int(threads))
        if threads == 1:
            for s, v in jobs:
                yield s, v, self.read_shard(v, s, columns=columns)
            return
        window = max(1, threads + 1 if prefetch is None else int(prefetch))
        with ThreadPoolExecutor(threads, thread_name_prefix="chain-read") as pool:
            ahead: deque = deque()

            def fill():
                while len(ahead) < window:
                    job = next(jobs, None)
                    if job is None:
                        return
                    ahead.append((job, pool.submit(self.read_shard, job[1], job[0],
                                                   columns=columns, use_threads=False)))

            try:
                fill()
                while ahead:
                    (s, v), fut = ahead.popleft()
                    cols = fut.result()
                    fill()
                    yield s, v, cols
                    del cols
            finally:
                for _, fut in ahead:
                    fut.cancel()

    def read_dense(self, version: str | None = None) -> dict:
        """Dense arrays of ``version`` (default: the head), verified."""
        if version is None:
            if not self.versions:
                raise MissingVersionError("empty chain: no version to read dense parameters from")
            version = self.head
        vm = self.get(version)
        what = f"version {version} dense"
        data = read_verified(vm.dir / DENSE, vm.file_entry(DENSE), what)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (ValueError, OSError) as e:
            raise CorruptFileError(f"{what}: {vm.dir / DENSE} unreadable: {e}") from None

    def verify(self) -> None:
        """Re-check the checksum of every file of every version of the chain."""
        for v in self.versions:
            check_version(self.layout, v.record, full=True)

    def load_into(self, table, shard_ids=None, *, weights_only: bool = False) -> None:
        """Load ``shard_ids`` (default: every shard) of the chain into the pstable ``table``: per
        shard the base, then every delta in order, through ``SparseTable.load``, the one
        implementation of what an admitted row, a pending entry and a tombstone do (the
        training job's servers and ``predict`` both load this way).

        ``weights_only``: ``opt_state`` is neither read nor loaded (``predict``: the table's rule
        must keep no state, e.g. ``sgd``).
        """
        shard_ids = list(range(self.num_shards or 0) if shard_ids is None else shard_ids)
        table.reserve(self.admitted_rows(shard_ids))  # the base's rows: no rehash while loading
        columns = [c for c in C.COLUMNS if c != "opt_state"] if weights_only else None
        # the next files are read, checked and decoded on threads while this one is loaded
        # (SparseTable.load releases the GIL)
        for _shard, _version, cols in self.iter_shards(shard_ids, columns=columns):
            if weights_only:
                cols = dict(cols, opt_state=np.empty((cols["key"].shape[0], 0), np.float32))
            table.load(cols)


def load_chain(model_dir, *, head: str | None = None, num_shards: int | None = None,
               verify: bool = False) -> Chain:
    """Resolve and check the chain ending at ``head`` (default: the ledger's head).

    ``num_shards``: what the caller's config says; a different number in the model is a
    ``ShardCountError`` naming both. ``verify=True`` also checks every file's checksum now
    (otherwise each file is checked when it is read). An empty model gives an empty chain.
    """
    layout = StoreLayout(model_dir)
    state = read_state(layout)
    recs = state.chain_of(head)
    versions = []
    prev = None
    for rec in recs:
        vm = check_version(layout, rec, full=verify)
        if prev is not None:
            if rec.parent != prev.version:
                raise ChainOrderError(f"version {rec.version}: parent {rec.parent}, expected {prev.version}")
            if rec.kind != "delta":
                raise ChainOrderError(f"version {rec.version}: a {rec.kind} inside the chain of {prev.version}")
            if rec.number <= prev.record.number:
                raise ChainOrderError(f"version {rec.version} comes after {prev.version}: out of order")
            for key in ("num_shards", "dim", "opt_width"):
                if vm.meta.get(key) != prev.meta.get(key):
                    exc = ShardCountError if key == "num_shards" else ChainOrderError
                    raise exc(f"version {rec.version}: {key}={vm.meta.get(key)} but "
                              f"{prev.version} has {prev.meta.get(key)}")
        versions.append(vm)
        prev = vm
    if versions and num_shards is not None and versions[0].meta["num_shards"] != num_shards:
        raise ShardCountError(f"model {model_dir} has num_shards={versions[0].meta['num_shards']} "
                              f"(version {versions[0].version}) but the config says num_shards={num_shards}")
    return Chain(layout, state, versions)


def read_version_meta(model_dir, version: str) -> dict:
    """meta.json of one committed version, checked against the ledger (no file checksums)."""
    layout = StoreLayout(model_dir)
    state = read_state(layout)
    rec = state.versions.get(version)
    if rec is None:
        raise MissingVersionError(f"version {version} is {state.why_absent(version)}")
    return check_version(layout, rec).meta


__all__ = ["Chain", "VersionMeta", "load_chain", "check_version", "read_checked_meta",
           "read_version_meta",
           "StoreError"]
