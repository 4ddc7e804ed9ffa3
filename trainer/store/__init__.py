"""The model store: staged versions, atomic commit, the verifiable chain (full base + deltas).

``model_dir`` layout and the meta.json format: ``docs/design.md`` and ``docs/model-store.md``.

===================  ===========================================================
hour status          ``hour_status`` / ``order_problem`` (``status``: the one place that decides)
job start            ``take_claim`` -> ``plan_hour`` -> ``rollback_head`` (force) -> ``load_chain``
job end (servers)    ``Stage.open`` -> ``write_shard`` / ``write_dense`` -> ``finish``
save task            ``save`` (commit + publish to the donefile), ``mark_missing``
operators            ``list_versions`` / ``verify_store`` / ``prune`` / ``predict``
===================  ===========================================================
"""
from .claim import Claim, StagingClaimedError, release_claim, take_claim
from .commit import SaveResult, clean_orphans, mark_empty, mark_missing, rollback_head, save
from .donefile import publish, read_donefile
from .errors import (ChainError, ChainOrderError, CorruptFileError, DuplicateVersionError,
                     LedgerError, MissingFileError, MissingVersionError, OrderError,
                     RefusedError, RollbackError,
                     SchemaError, ShardCountError, StagedVersionError, StoreError)
from .layout import StoreLayout, shard_file_name, version_name
from .ledger import ChainState, Ledger, VersionRecord, read_state
from .load import Chain, VersionMeta, load_chain, read_checked_meta, read_version_meta
from .plan import Plan, plan_hour
from .prune import prune, prune_candidates
from .stage import FileInfo, Stage, check_room
from .status import HourStatus, hour_status, order_problem
from .verify import format_versions, list_versions, verify_store

__all__ = [
    "Claim", "HourStatus", "VersionRecord", "OrderError", "RefusedError", "StagingClaimedError", "check_room",
    "hour_status", "mark_empty", "order_problem", "release_claim", "take_claim",
    "Chain", "ChainError", "ChainOrderError", "ChainState", "CorruptFileError",
    "DuplicateVersionError", "FileInfo", "Ledger", "LedgerError", "MissingFileError",
    "MissingVersionError", "Plan", "RollbackError", "SaveResult", "SchemaError",
    "ShardCountError", "Stage", "StagedVersionError", "StoreError", "StoreLayout",
    "VersionMeta", "clean_orphans", "load_chain", "mark_missing",
    "plan_hour", "prune", "prune_candidates", "publish", "read_checked_meta", "read_donefile", "read_state",
    "read_version_meta", "rollback_head",
    "save", "shard_file_name", "version_name", "format_versions", "list_versions",
    "verify_store",
]
