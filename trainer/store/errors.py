"""Every error the model store raises. Each names the version and/or file it is about.

``StoreError`` is the root. ``ChainError`` and its subclasses mean "the committed chain cannot be
trusted as it is": a reader must stop, never skip the version. ``StagedVersionError`` means the
staged (uncommitted) version cannot be committed; the chain is untouched.
"""
from __future__ import annotations


class StoreError(Exception):
    """Base class of every model-store error."""


class ChainError(StoreError):
    """The committed chain is inconsistent: the message names the version (and file)."""


class LedgerError(ChainError):
    """A ledger line is unreadable or breaks the append-only rules (seq gap, bad event)."""


class MissingVersionError(ChainError):
    """A version the chain needs is absent (no folder, no meta.json, pruned, rolled back)."""


class MissingFileError(MissingVersionError):
    """A file listed in a version's meta.json does not exist."""


class CorruptFileError(ChainError):
    """A file's size or checksum differs from what was recorded, or it cannot be parsed."""


class DuplicateVersionError(ChainError):
    """A version name or a data hour appears twice in the chain."""


class ChainOrderError(ChainError):
    """Out-of-order version, wrong parent link, wrong kind, or meta.json disagreeing with the ledger."""


class ShardCountError(ChainError):
    """``num_shards`` differs between the model and what the caller expects."""


class StagedVersionError(StoreError):
    """The staged version is incomplete, corrupt or does not fit on the current head."""


class RefusedError(StoreError):
    """The hour may not run now and nothing was changed (exit code 4): retry once settled."""


class OrderError(RefusedError):
    """An earlier hour since the head is neither committed nor recorded (the order rule)."""


class RollbackError(StoreError):
    """A rollback / forced retrain was asked for a version that is not the head."""


class SchemaError(StoreError, ValueError):
    """Shard columns handed to the store have a wrong name, dtype or shape."""
