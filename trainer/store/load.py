"""Resolving and reading the committed chain: newest base, then every later delta in order.

On each server rank at job start::

    chain = load_chain(model_dir, num_shards=cfg.table_num_shards)
    for s in chain.shards_for_rank(rank, num_servers):
        for v in chain.versions:                       # base first, then deltas in order
            tables[s].load(chain.read_shard(v.version, s))
    dense = chain.read_dense()                         # the head's dense parameters

``load_chain`` checks every link (ledger order, parent, kind, meta.json pinned by sha256 in the
ledger, num_shards, every listed file present with its recorded size). ``read_shard`` /
``read_dense`` check the CRC-32 of the bytes they parse. ``Chain.verify()`` re-checks every file.
Anything wrong raises a ``ChainError`` subclass naming the version (and file), never skips it.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import columns as C
from .errors import (ChainOrderError, CorruptFileError, MissingFileError, MissingVersionError,
                     SchemaError, ShardCountError, StoreError)
from .layout import (CHECKSUM_ALGO, DENSE, META, SCHEMA_VERSION, StoreLayout, checksum,
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
    if not isinstance(meta, dict) or meta.get("schema_version") != SCHEMA_VERSION:
        raise CorruptFileError(f"{what}: {vdir / META} has schema_version "
                               f"{meta.get('schema_version') if isinstance(meta, dict) else None}, "
                               f"expected {SCHEMA_VERSION}")
    if meta.get("checksum_algo", CHECKSUM_ALGO) != CHECKSUM_ALGO:
        raise CorruptFileError(f"{what}: checksum_algo {meta.get('checksum_algo')!r} unsupported")
    return meta, raw


def check_meta_files(vdir: Path, meta: dict, what: str, *, full: bool) -> None:
    """Every listed file exists with its size (and, if ``full``, its checksum); shards complete."""
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
            read_verified(p, f, what)


def read_verified(path: Path, entry: dict, what: str) -> bytes:
    """Read a whole file and check its size and CRC-32 against its meta.json entry."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"{what}: file {path} listed in meta.json does not exist") from None
    if len(data) != entry["bytes"]:
        raise CorruptFileError(f"{what}: file {path} has {len(data)} bytes, meta.json says {entry['bytes']}")
    got = checksum(data)
    if got != entry["checksum"]:
        raise CorruptFileError(f"{what}: file {path} checksum {CHECKSUM_ALGO} {got} != recorded "
                               f"{entry['checksum']} (corrupt)")
    return data


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


def check_version(layout: StoreLayout, rec: VersionRecord, *, full: bool = False) -> VersionMeta:
    """Check one committed version against its ledger line; returns its meta."""
    what = f"version {rec.version} ({rec.kind} {rec.hour_str})"
    vdir = layout.version_dir(rec.version)
    meta, raw = read_meta_bytes(vdir, what)
    if rec.meta_sha256 and sha256_hex(raw) != rec.meta_sha256:
        raise CorruptFileError(f"{what}: {vdir / META} sha256 differs from the ledger (corrupt or replaced)")
    for key, want in (("version", rec.version), ("kind", rec.kind), ("hour", rec.hour),
                      ("parent", rec.parent), ("base", rec.base)):
        if meta.get(key) != want:
            raise ChainOrderError(f"{what}: meta.json {key}={meta.get(key)!r} but the ledger says {want!r}")
    check_meta_files(vdir, meta, what, full=full)
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

    @staticmethod
    def shards_for_rank(num_shards: int, rank: int, num_servers: int) -> list[int]:
        """Logical shards hosted by server ``rank`` of ``num_servers``: ``s % num_servers == rank``."""
        return [s for s in range(num_shards) if s % num_servers == rank]

    def read_shard(self, version: str, shard_id: int, columns=None, writable: bool = False) -> dict:
        """Columns of ``shard_id`` in ``version`` (verified CRC), as pstable ``load`` takes them.

        ``columns`` restricts the decoded columns; ``writable=True`` returns owned, writable copies
        (the default is read-only views of Arrow memory: no copy).
        """
        vm = self.get(version)
        name = shard_file_name(shard_id)
        what = f"version {version} ({vm.kind} {vm.record.hour_str}) shard {shard_id}"
        entry = vm.file_entry(name)
        data = read_verified(vm.dir / name, entry, what)
        try:
            cols = C.decode_parquet(data, where=f"{what} {vm.dir / name}", columns=columns,
                                    opt_width=vm.meta.get("opt_width"))
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

    def merged_shard(self, shard_id: int, columns=("key", "slot", "weights")) -> dict:
        """The chain applied to one shard in numpy (what ``SparseTable.load`` in order would hold),
        restricted to admitted rows; used by predict (no pstable, no optimizer state).

        Last event per feature wins among admitted (0) and tombstone (2); pending entries (1) do
        not touch an admitted row (as ``load``).
        """
        need = list(dict.fromkeys(("key", "slot", "state", *columns)))
        parts = [self.read_shard(v.version, shard_id, columns=need) for v in self.versions]
        if not parts:
            return {c: np.zeros((0,), np.uint64) for c in columns}
        cat = {c: np.concatenate([p[c] for p in parts]) for c in need}
        keep = cat["state"] != C.STATE_PENDING
        cat = {c: a[keep] for c, a in cat.items()}
        n = cat["key"].shape[0]
        order = np.arange(n)
        idx = np.lexsort((order, cat["slot"], cat["key"]))
        k, s = cat["key"][idx], cat["slot"][idx]
        last = np.ones(n, bool)
        if n:
            last[:-1] = (k[1:] != k[:-1]) | (s[1:] != s[:-1])
        sel = idx[last]
        sel = sel[cat["state"][sel] == C.STATE_ADMITTED]
        return {c: cat[c][sel] for c in columns}


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


__all__ = ["Chain", "VersionMeta", "load_chain", "check_version", "read_version_meta",
           "StoreError"]
