"""Names and paths of the model store, checksums and the store lock (durable writes: ``durable``).

Layout of ``model_dir`` (see ``docs/model-store.md``)::

    ledger.jsonl              append-only, fsync'd: the single source of truth
    versions/v000007/         one committed version: meta.json, shard-00000.parquet..., dense.npz
    staging/2026-11-26T13/    what the job staged and the save task has not committed yet
    donefile                  one JSON line per published version
    .lock                     flock taken by every writer of the ledger / versions / donefile

>>> version_name(7)
'v000007'
>>> version_number('v000007')
7
>>> shard_file_name(3)
'shard-00003.parquet'
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import re
from contextlib import contextmanager
from pathlib import Path

from isal import isal_zlib

from trainer.hours import hour_str

from .errors import StoreError

#: Written: 2, matrices as fixed-size binary columns (see ``columns``). Read: 2, and 1 (one
#: float32 column per matrix element), so a chain saved before keeps training; a version of
#: any other schema is refused by name, never misread.
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)

#: File checksum: zlib CRC-32 of the whole file, as 8 hex digits: the fastest of the usual
#: checksums here (docs/benchmarks.md, "Why the store is built as it is"). The threat is
#: accidental corruption (torn writes, bit rot, truncated copies), not an adversary, and the byte
#: size is checked too. meta.json itself is small and is pinned by sha256 in the ledger.
CHECKSUM_ALGO = "crc32"

LEDGER = "ledger.jsonl"
DONEFILE = "donefile"
VERSIONS = "versions"
STAGING = "staging"
LOCK = ".lock"
META = "meta.json"
DENSE = "dense.npz"

_VERSION_RE = re.compile(r"^v(\d{6,})$")


def version_name(number: int) -> str:
    """``7 -> 'v000007'``."""
    if number < 1:
        raise StoreError(f"version numbers start at 1, got {number}")
    return f"v{number:06d}"


def version_number(name: str) -> int:
    """``'v000007' -> 7``; a malformed name is a ``StoreError`` naming it."""
    m = _VERSION_RE.match(name or "")
    if not m:
        raise StoreError(f"not a version name: {name!r} (expected v + 6 digits, e.g. v000007)")
    return int(m.group(1))


def is_version_name(name: str) -> bool:
    return bool(_VERSION_RE.match(name))


def shard_file_name(shard_id: int) -> str:
    return f"shard-{int(shard_id):05d}.parquet"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def crc32(data, value: int = 0) -> int:
    """``zlib.crc32`` (the same values, continuing from `value`), computed by ISA-L, several times
    faster than zlib (docs/benchmarks.md), which matters because every byte is checksummed at
    stage, commit and load."""
    return isal_zlib.crc32(memoryview(data), value)


def checksum(data) -> str:
    """CRC-32 of a bytes-like object (bytes, memoryview, pyarrow Buffer) as 8 hex digits."""
    return f"{crc32(data) & 0xFFFFFFFF:08x}"


def sha256_hex(data) -> str:
    return hashlib.sha256(memoryview(data)).hexdigest()


class StoreLayout:
    """Paths inside one ``model_dir``. Pure: creates nothing until asked."""

    def __init__(self, model_dir):
        self.root = Path(model_dir)
        self.ledger = self.root / LEDGER
        self.donefile = self.root / DONEFILE
        self.versions = self.root / VERSIONS
        self.staging = self.root / STAGING
        self.lock = self.root / LOCK

    def version_dir(self, version: str) -> Path:
        return self.versions / version

    def staging_dir(self, hour: int) -> Path:
        return self.staging / hour_str(hour)

    def ensure(self) -> None:
        for d in (self.root, self.versions, self.staging):
            d.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"StoreLayout({str(self.root)!r})"


@contextmanager
def store_lock(layout: StoreLayout):
    """Exclusive advisory lock for every writer of ledger / versions / donefile (one at a time)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with open(layout.lock, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
