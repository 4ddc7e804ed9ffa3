"""Pruning old versions: keep the newest N bases and everything a load can still need.

Kept: every version from the N-th newest base on, plus the chain of the head's parent (so the
head can still be rolled back and retrained, even when the head is a base). The ``prune`` line
is appended to the ledger first (from then on those versions are gone for every reader), then
the folders are removed; a crash in between leaves orphans that the next ``save`` removes.
"""
from __future__ import annotations

from .durable import remove_tree
from .errors import StoreError
from .layout import StoreLayout, store_lock, utc_now
from .ledger import Ledger, read_state


def prune_candidates(state, keep_bases: int) -> list[str]:
    if keep_bases < 1:
        raise StoreError(f"keep_bases must be >= 1, got {keep_bases}")
    order = list(state.versions)  # training order
    bases = [i for i, v in enumerate(order) if state.versions[v].kind == "full"]
    if len(bases) <= keep_bases:
        return []
    first_kept = bases[-keep_bases]
    needed = {r.version for r in state.chain_of()}
    head = state.head
    if head is not None and state.versions[head].parent in state.versions:
        needed |= {r.version for r in state.chain_of(state.versions[head].parent)}
    return [v for v in order[:first_kept] if v not in needed]


def prune(model_dir, keep_bases: int, *, dry_run: bool = False, hook=None) -> list[str]:
    """Remove versions older than the newest ``keep_bases`` bases (never one a load needs).

    Returns the names removed (or that would be, with ``dry_run``).
    """
    layout = StoreLayout(model_dir)
    with store_lock(layout):
        state = read_state(layout)
        gone = prune_candidates(state, keep_bases)
        if not gone or dry_run:
            return gone
        Ledger(layout.ledger).append({"event": "prune", "versions": gone,
                                      "keep_bases": int(keep_bases), "recorded_at": utc_now()})
        if hook:
            hook("pruned")
        for v in gone:
            remove_tree(layout.version_dir(v))
        return gone
