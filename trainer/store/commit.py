"""Committing a staged version (the save task), missing-hour records and rollback.

``save`` publishes ``staging/<hour_str>/`` as ``versions/vNNNNNN/`` in these steps, under the
store lock; ``hook(step)`` is called after each one (crash-injection tests raise or exit there):

1. ``"start"``       ledger read; an hour already committed returns ``already_committed``.
2. ``"cleaned"``     orphans removed: version folders without a ledger line (an earlier save that
                     crashed after its rename, an interrupted rollback / prune) unless one is the
                     very commit being retried, which is then completed instead of redone; the
                     donefile falls back from a rolled-back version if a rollback was interrupted.
3. ``"verified"``    meta.json present, every file's size and CRC-32, shards 0..n-1, parent == the
                     head, version == the next name, num_shards / dim as the chain, kind as asked.
4. ``"renamed"``     os.rename(staging/<hour>, versions/vN) (same filesystem).
5. ``"synced"``      both parent folders fsync'd.
6. ``"ledger_partial"`` (inside the append) and ``"committed"``: the ledger line written, flushed,
                     fsync'd. Only now does the version exist.
7. ``"published"``   the donefile line (``publish=True``), idempotent.

A crash before 6 leaves the ledger, hence the chain, as it was; running ``save`` again completes
(from the renamed folder) or redoes (from staging) the commit.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .claim import StagingClaimedError, release_claim_locked, staged_claim_problem
from .donefile import fall_back_locked, publish_locked
from .durable import fsync_dir, remove_tree
from .errors import (ShardCountError, StagedVersionError, StoreError)
from .layout import (META, StoreLayout, hour_str, is_version_name, sha256_hex,
                     store_lock, utc_now)
from .ledger import ChainState, Ledger, read_state
from .load import check_meta_files, check_version, read_meta_bytes


@dataclass
class SaveResult:
    status: str  # "committed" | "completed" (finished an interrupted commit) | "already_committed"
    version: str
    kind: str
    hour: int
    path: Path
    published: bool
    message: str

    def __str__(self) -> str:
        return self.message


def _noop(step: str) -> None:
    pass


def _orphans(layout: StoreLayout, state: ChainState) -> list[Path]:
    if not layout.versions.is_dir():
        return []
    return sorted(p for p in layout.versions.iterdir()
                  if is_version_name(p.name) and p.name not in state.versions)


def _clean_trash(layout: StoreLayout) -> None:
    if layout.versions.is_dir():
        for p in layout.versions.iterdir():
            if p.name.startswith(".trash-"):
                shutil.rmtree(p, ignore_errors=True)


def _check_candidate(layout, state, cdir: Path, hour: int, kind: str | None, where: str) -> tuple[dict, bytes]:
    meta, raw = read_meta_bytes(cdir, where, missing_exc=StagedVersionError)
    want_version = state.next_version()
    problems = []
    if meta.get("hour") != hour:
        problems.append(f"hour {meta.get('hour')} != {hour}")
    if meta.get("parent") != state.head:
        problems.append(f"parent {meta.get('parent')} != current head {state.head} "
                        f"(the chain moved since this was staged: retrain the hour)")
    if meta.get("version") != want_version:
        problems.append(f"version {meta.get('version')} != next version {want_version}")
    if kind is not None and meta.get("kind") != kind:
        problems.append(f"kind {meta.get('kind')} but {kind} was asked")
    if meta.get("kind") == "delta" and state.head is None:
        problems.append("a delta cannot start a chain (no base yet)")
    if meta.get("kind") == "delta" and state.head is not None and \
            meta.get("base") != state.versions[state.head].base:
        problems.append(f"base {meta.get('base')} != base of the head {state.versions[state.head].base}")
    if problems:
        raise StagedVersionError(f"{where}: " + "; ".join(problems))
    if state.head is not None:
        head_meta = check_version(layout, state.versions[state.head]).meta
        for key in ("num_shards", "dim", "opt_width"):
            if meta.get(key) != head_meta.get(key):
                exc = ShardCountError if key == "num_shards" else StagedVersionError
                raise exc(f"{where}: {key}={meta.get(key)} but the head {state.head} has "
                          f"{key}={head_meta.get(key)}")
    try:
        check_meta_files(cdir, meta, where, full=True)
    except StoreError as e:
        raise StagedVersionError(str(e)) from None
    return meta, raw


def save(model_dir, hour: int, *, kind: str | None = None, publish: bool = True,
         hook=None) -> SaveResult:
    """Commit the staged version of ``hour`` (see the module docstring for the steps).

    Raises ``StagedVersionError`` (nothing staged, incomplete, corrupt, wrong parent / kind).
    """
    hook = hook or _noop
    layout = StoreLayout(model_dir)
    layout.ensure()
    hs = hour_str(hour)
    t0 = time.perf_counter()
    with store_lock(layout):
        state = read_state(layout)
        hook("start")
        if hour in state.by_hour:
            v = state.by_hour[hour]
            rec = state.versions[v]
            pub = publish_locked(layout, v, hook=hook) if publish else False
            return SaveResult("already_committed", v, rec.kind, hour, layout.version_dir(v), pub,
                              f"hour {hs} is already in the chain as {v} ({rec.kind}); nothing to do")
        staged = layout.staging_dir(hour)
        want = state.next_version()
        resume = None
        if not staged.exists():
            cand = layout.version_dir(want)
            try:
                if json.loads((cand / META).read_bytes()).get("hour") == hour:
                    resume = cand  # an earlier save of this hour crashed after its rename
            except (OSError, ValueError):
                pass  # absent or unreadable: an orphan, cleaned below
        for p in _orphans(layout, state):
            if p != resume:
                remove_tree(p)
        _clean_trash(layout)
        fall_back_locked(layout)
        hook("cleaned")
        if resume is None and not staged.is_dir():
            raise StagedVersionError(f"hour {hs}: nothing staged at {staged} (train the hour first)")
        src = resume or staged
        where = f"staged {hs} ({src})"
        meta, raw = _check_candidate(layout, state, src, hour, kind, where)
        problem = staged_claim_problem(layout, hour, meta)
        if problem:
            raise StagingClaimedError(f"{where}: not committed: {problem}")
        hook("verified")
        dest = layout.version_dir(want)
        if resume is None:
            if dest.exists():
                raise StoreError(f"{dest} exists after cleaning (concurrent writer?)")
            staged.rename(dest)
            hook("renamed")
            fsync_dir(layout.versions)
            fsync_dir(layout.staging)
            hook("synced")
        Ledger(layout.ledger).append({
            "event": "commit", "version": want, "kind": meta["kind"], "hour": hour, "hour_str": hs,
            "parent": meta["parent"], "base": meta["base"], "meta_sha256": sha256_hex(raw),
            "rows": meta.get("rows"), "bytes": meta.get("bytes"),
            "commit_seconds": round(time.perf_counter() - t0, 6), "committed_at": utc_now(),
        }, hook=hook if hook is not _noop else None)
        hook("committed")
        release_claim_locked(layout, hour, meta.get("claim"))
        pub = publish_locked(layout, want, hook=hook) if publish else False
        status = "completed" if resume is not None else "committed"
        return SaveResult(status, want, meta["kind"], hour, dest, pub,
                          f"hour {hs} {status} as {want} ({meta['kind']}, parent {meta['parent']})")


def mark_missing(model_dir, hour: int, reason: str) -> dict:
    """Record that ``hour`` never landed (or was skipped) and the chain goes on without it."""
    return _record_hour(model_dir, hour, "missing", reason)


def mark_empty(model_dir, hour: int, reason: str) -> dict:
    """Record that ``hour`` landed with no rows: no version is made, the chain goes on."""
    return _record_hour(model_dir, hour, "empty", reason)


def _record_hour(model_dir, hour: int, event: str, reason: str) -> dict:
    layout = StoreLayout(model_dir)
    layout.ensure()
    with store_lock(layout):
        state = read_state(layout)
        if hour in state.by_hour:
            raise StoreError(f"hour {hour_str(hour)} is committed as {state.by_hour[hour]}; "
                             f"it cannot be recorded as {event}")
        return Ledger(layout.ledger).append({"event": event, "hour": int(hour),
                                             "hour_str": hour_str(hour), "reason": str(reason),
                                             "recorded_at": utc_now()})


def rollback_head(model_dir, version: str, *, reason: str = "", hook=None) -> dict:
    """Roll back the head ``version`` (only the head): ledger line first, then, if ``version``
    was the newest published one, the donefile lists the new head again (``donefile`` says why),
    then the folder goes.

    A crash between these steps leaves an orphan folder, and maybe the donefile not yet fallen
    back, which the next ``save`` completes.
    """
    hook = hook or _noop
    layout = StoreLayout(model_dir)
    with store_lock(layout):
        state = read_state(layout)
        if version not in state.versions:
            raise StoreError(f"cannot roll back {version}: it is {state.why_absent(version)}")
        rec = state.check_rollback(version)
        ev = Ledger(layout.ledger).append({"event": "rollback", "version": version, "kind": rec.kind,
                                           "hour": rec.hour, "hour_str": rec.hour_str,
                                           "parent": rec.parent, "reason": str(reason),
                                           "recorded_at": utc_now()})
        hook("rolled_back")
        fall_back_locked(layout, hook)
        remove_tree(layout.version_dir(version))
        return ev


def clean_orphans(model_dir) -> list[str]:
    """Remove version folders that have no ledger line (what ``save`` does first). Returns names."""
    layout = StoreLayout(model_dir)
    with store_lock(layout):
        state = read_state(layout)
        gone = []
        for p in _orphans(layout, state):
            remove_tree(p)
            gone.append(p.name)
        _clean_trash(layout)
        return gone
