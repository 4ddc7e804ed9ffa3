"""Writing a staged version: ``model_dir/staging/<hour_str>/`` (invisible to every reader).

Inside the MPI job::

    stage = Stage.open(model_dir, hour, kind, parent, num_shards=8, dim=8, opt_width=2,
                       optimizer_rule="adagrad")            # every server rank
    cols = table.export(changed_only=(kind == "delta"))     # each server: its logical shards
    infos = stage.write_shards(split_by_shard(cols, shard_of(...), my_shards))  # 2 threads
    all_infos = comm.gather(infos, root=0)                   # small dicts / dataclasses
    if rank == 0:
        infos.append(stage.write_dense(dense_arrays))
        path = stage.finish(flat(all_infos) + [dense_info], partition=..., metrics=...,
                            config_hash=cfg.config_hash(), code_version=...)

Every file is written to a temp name, fsync'd and renamed into place, so a file is either whole
or absent; its CRC-32 is of exactly the bytes written. ``write_shards`` encodes, checksums,
writes and fsyncs several shards at once on a small thread pool (Arrow's encoder, the CRC,
write and fsync all release the GIL). ``open`` removes a previous attempt's ``meta.json`` (the "staged and complete" mark),
so a retry first makes the folder incomplete; shards of the new attempt replace the old ones file
by file; ``finish`` deletes any file its list does not name and writes ``meta.json`` last.
"""
from __future__ import annotations

import io
import shutil
import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import columns as C
from .errors import StagedVersionError, StoreError
from .durable import fsync_dir, write_file_durable
from .layout import (CHECKSUM_ALGO, DENSE, META, SCHEMA_VERSION, StoreLayout, checksum, hour_str,
                     shard_file_name, utc_now)
from .claim import check_claim
from ..jsonsafe import strict_dumps
from .ledger import KINDS, read_state


@dataclass
class FileInfo:
    """One file of a version, as recorded in meta.json ``files``."""

    name: str
    role: str  # "shard" or "dense"
    rows: int
    bytes: int
    checksum: str
    shard: int | None = None
    counts: dict = field(default_factory=dict)  # admitted / pending / tombstones (shards)

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.shard is None:
            d.pop("shard")
        if not self.counts:
            d.pop("counts")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FileInfo":
        if isinstance(d, FileInfo):
            return d
        return cls(name=d["name"], role=d.get("role", "shard"), rows=int(d["rows"]),
                   bytes=int(d["bytes"]), checksum=d["checksum"], shard=d.get("shard"),
                   counts=dict(d.get("counts", {})))


class Stage:
    """A staged version being written. Cheap to open on every rank."""

    def __init__(self, layout: StoreLayout, hour: int, kind: str, parent: str | None, *,
                 num_shards: int, dim: int, opt_width: int, optimizer_rule: str,
                 compression: str, compression_level: int | None, claim: str | None = None):
        self.layout = layout
        self.claim = claim
        self.hour = int(hour)
        self.kind = kind
        self.parent = parent
        self.num_shards = int(num_shards)
        self.dim = int(dim)
        self.opt_width = int(opt_width)
        self.optimizer_rule = optimizer_rule
        self.compression = compression
        self.compression_level = compression_level
        self.dir = layout.staging_dir(self.hour)

    @classmethod
    def open(cls, model_dir, hour: int, kind: str, parent: str | None, *, num_shards: int,
             dim: int, opt_width: int, optimizer_rule: str = "",
             compression: str = C.DEFAULT_COMPRESSION,
             compression_level: int | None = C.DEFAULT_COMPRESSION_LEVEL,
             claim: str | None = None) -> "Stage":
        """Open (create) the staging folder of ``hour`` and mark it incomplete.

        Safe to call on every server rank at once, and again on a retry. ``claim``: the token of
        this run's claim on the staging (``claim.take_claim``); it is checked before anything is
        touched (a run whose claim was taken over writes nothing) and recorded in meta.json.
        """
        if kind not in KINDS:
            raise StoreError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "delta" and parent is None:
            raise StoreError(f"hour {hour_str(hour)}: a delta needs a parent version")
        if num_shards < 1 or dim < 0 or opt_width < 0:
            raise StoreError(f"bad stage shape: num_shards={num_shards} dim={dim} opt_width={opt_width}")
        layout = StoreLayout(model_dir)
        st = cls(layout, hour, kind, parent, num_shards=num_shards, dim=dim, opt_width=opt_width,
                 optimizer_rule=optimizer_rule, compression=compression,
                 compression_level=compression_level, claim=claim)
        if claim is not None:
            check_claim(model_dir, hour, claim)
        st.dir.mkdir(parents=True, exist_ok=True)
        try:
            os.unlink(st.dir / META)
        except FileNotFoundError:
            pass
        return st

    # -- files -------------------------------------------------------------------------------
    def write_shard(self, shard_id: int, columns: dict) -> FileInfo:
        """Write logical shard ``shard_id`` (a pstable export dict) as Parquet; returns its FileInfo."""
        if not 0 <= int(shard_id) < self.num_shards:
            raise StoreError(f"shard {shard_id} out of range 0..{self.num_shards - 1}")
        name = shard_file_name(shard_id)
        where = f"staging {hour_str(self.hour)}/{name}"
        cols = C.check_columns(columns, dim=self.dim, opt_width=self.opt_width, where=where)
        counts = C.state_counts(cols["state"])
        rows = int(cols["key"].shape[0])
        buf = C.encode_parquet(cols, compression=self.compression,
                               compression_level=self.compression_level)
        del cols
        crc = checksum(buf)
        try:
            write_file_durable(self.dir / name, buf, sync_dir=False)
        except OSError as e:
            raise StoreError(f"{where}: cannot write {self.dir / name}: {e}") from e
        return FileInfo(name=name, role="shard", rows=rows, bytes=buf.size,
                        checksum=crc, shard=int(shard_id), counts=counts)

    def write_shards(self, shards, *, threads: int | None = None) -> list[FileInfo]:
        """Write several shards at once (``write_shard`` each, on ``threads`` threads); returns
        their FileInfo in the order given.

        ``shards``: a mapping ``{shard_id: columns}`` or an iterable of ``(shard_id, columns)``
        pairs, e.g. ``columns.split_by_shard(...)``. It is consumed lazily: the next pair is
        taken while ``threads`` shards are being written, so at most ``threads + 1`` shards'
        columns (and their encoded files) are in memory. ``threads`` defaults to
        ``columns.default_threads()`` (2 on a 2-core machine); 1 writes one after another.
        A shard id given twice is an error. On an error no further shard is started, the ones
        running finish, and the error of the first failed shard (in the order given) is raised.
        """
        pairs = shards.items() if hasattr(shards, "items") else shards
        threads = C.default_threads() if threads is None else max(1, int(threads))
        seen: set[int] = set()

        def admit(shard_id) -> int:
            shard_id = int(shard_id)
            if shard_id in seen:
                raise StoreError(f"staging {hour_str(self.hour)}: shard {shard_id} given twice")
            seen.add(shard_id)
            return shard_id

        if threads == 1:
            return [self.write_shard(admit(s), cols) for s, cols in pairs]
        futures = []
        with ThreadPoolExecutor(threads, thread_name_prefix="stage-shard") as pool:
            running: set = set()
            try:
                for shard_id, cols in pairs:  # the next shard is split while others are written
                    shard_id = admit(shard_id)
                    while len(running) >= threads:
                        done, running = wait(running, return_when=FIRST_COMPLETED)
                        if any(f.exception() is not None for f in done):
                            break
                    if any(f.done() and f.exception() is not None for f in futures):
                        break
                    futures.append(pool.submit(self.write_shard, shard_id, cols))
                    running.add(futures[-1])
                    del cols
            finally:
                wait(futures)
        for f in futures:
            if f.exception() is not None:
                raise f.exception()
        return [f.result() for f in futures]

    def write_dense(self, arrays: dict) -> FileInfo:
        """Write the dense parameters and their optimizer state (``name -> ndarray``) as dense.npz."""
        bio = io.BytesIO()
        clean = {}
        for k, v in arrays.items():
            a = np.asarray(v)
            if a.dtype == object:
                raise StoreError(f"dense array {k!r} has dtype object; numeric arrays only")
            clean[str(k)] = a
        np.savez(bio, **clean)
        data = bio.getbuffer()
        write_file_durable(self.dir / DENSE, data, sync_dir=False)
        return FileInfo(name=DENSE, role="dense", rows=len(clean), bytes=len(data),
                        checksum=checksum(data))

    # -- the end -------------------------------------------------------------------------------
    def finish(self, files, partition=None, metrics=None, config_hash: str = "",
               code_version: str = "", extra: dict | None = None) -> Path:
        """Write meta.json (last) for the gathered ``files``; returns the staged folder.

        ``files``: FileInfo (or their dicts) of every shard 0..num_shards-1 and of dense.npz.
        ``partition``: ``{"path": ..., "files": [{"name", "bytes", "sha256"|"checksum"}]}`` or
        just the list of files. ``extra``: merged at top level (e.g. ``{"airflow": {...}}``,
        ``{"day_boundary": {"evicted": 3}}``).
        """
        infos = [FileInfo.from_dict(f) for f in files]
        where = f"staging {hour_str(self.hour)}"
        shards = sorted(i.shard for i in infos if i.role == "shard")
        if shards != list(range(self.num_shards)):
            raise StagedVersionError(f"{where}: shard files {shards} != every shard 0..{self.num_shards - 1} once")
        dense = [i for i in infos if i.role == "dense"]
        if len(dense) != 1:
            raise StagedVersionError(f"{where}: expected exactly one dense file, got {len(dense)}")
        for i in infos:
            p = self.dir / i.name
            if not p.is_file() or p.stat().st_size != i.bytes:
                raise StagedVersionError(f"{where}/{i.name}: missing or size differs from "
                                         f"{i.bytes} bytes (another attempt overwrote it?)")
        listed = {i.name for i in infos}
        for p in self.dir.iterdir():
            if p.name not in listed:
                if p.is_dir():
                    raise StagedVersionError(f"{where}: unexpected folder {p.name}")
                p.unlink()
        state = read_state(self.layout)
        base = self.parent if self.kind == "delta" else None
        if self.kind == "delta":
            if self.parent not in state.versions:
                raise StagedVersionError(f"{where}: parent {self.parent} is {state.why_absent(self.parent)}")
            base = state.versions[self.parent].base
        version = state.next_version()
        rows = {"admitted": 0, "pending": 0, "tombstones": 0}
        for i in infos:
            for k in rows:
                rows[k] += int(i.counts.get(k, 0))
        total_bytes = sum(i.bytes for i in infos)
        metrics = dict(metrics or {})
        metrics.setdefault("bytes_saved", total_bytes)
        if isinstance(partition, list):
            partition = {"path": None, "files": partition}
        ordered = sorted(infos, key=lambda i: (i.role != "shard", i.shard or 0))
        meta = {
            "schema_version": SCHEMA_VERSION,
            "version": version,
            "kind": self.kind,
            "hour": self.hour,
            "hour_str": hour_str(self.hour),
            "parent": self.parent,
            "base": version if self.kind == "full" else base,
            "num_shards": self.num_shards,
            "dim": self.dim,
            "opt_width": self.opt_width,
            "optimizer_rule": self.optimizer_rule,
            "config_hash": config_hash,
            "code_version": code_version,
            "checksum_algo": CHECKSUM_ALGO,
            "compression": self.compression,
            "partition": partition or {"path": None, "files": []},
            "files": [i.to_dict() for i in ordered],
            "rows": rows,
            "bytes": total_bytes,
            "metrics": metrics,
            "staged_at": utc_now(),
        }
        if self.claim is not None:
            meta["claim"] = self.claim
        for k, v in (extra or {}).items():
            if k in meta:
                raise StoreError(f"extra key {k!r} would overwrite a meta.json field")
            meta[k] = v
        fsync_dir(self.dir)
        write_file_durable(self.dir / META, strict_dumps(meta, indent=1, sort_keys=False).encode())
        fsync_dir(self.dir.parent)
        return self.dir


#: Free space kept on top of the estimate of a staged version's size.
ROOM_MARGIN_BYTES = 64 << 20


def check_room(model_dir, kind: str) -> int:
    """Preflight before an hour trains: ``model_dir`` must be writable and its disk must have room
    for the version to stage, estimated as 1.5 x the newest committed version of the same kind
    (plus :data:`ROOM_MARGIN_BYTES`). Raises ``StoreError`` naming the path; returns the free bytes.

    Checked at job start, so a read-only or full store fails in seconds, not after the hour trained.
    """
    layout = StoreLayout(model_dir)
    try:
        layout.ensure()
        probe = layout.staging / f".preflight-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
        free = shutil.disk_usage(layout.staging).free
    except OSError as e:
        raise StoreError(f"model_dir {layout.root} is not writable: {e}") from e
    sizes = [int(ev.get("bytes") or 0) for ev in read_state(layout).events
             if ev.get("event") == "commit" and ev.get("kind") == kind]
    needed = int(1.5 * (sizes[-1] if sizes else 0)) + ROOM_MARGIN_BYTES
    if free < needed:
        raise StoreError(f"model_dir {layout.root}: {free:,} bytes free on its disk, a {kind} "
                         f"version needs about {needed:,} (1.5 x the last {kind} + margin)")
    return free
