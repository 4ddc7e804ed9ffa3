"""Helpers behind ``streamtrain chain``: list the versions, verify every checksum and link."""
from __future__ import annotations

from ..jsonsafe import json_safe
from .errors import ChainError
from .layout import StoreLayout
from .ledger import read_state
from .load import check_version, load_chain


def list_versions(model_dir, *, verify: bool = False) -> list[dict]:
    """One dict per visible version in training order, plus missing-hour records.

    Keys: version, kind, hour, hour_str, parent, rows (admitted/pending/tombstones), total_rows,
    bytes, auc, metrics (all the hour's metrics), calibration (the hour's progressive
    ``pred_ctr``, ``actual_ctr``, ``copc`` and ``reliability``, see
    :class:`trainer.metrics.Reliability`; ``null`` where not a finite number), in_chain (part of
    what a load of the head reads), committed_at, error (why the version cannot be read: ``None``
    when it can; a bad version is listed, marked, and the others still are). ``verify=True``
    re-checks every file's checksum first (``ChainError`` naming the version on failure).
    """
    layout = StoreLayout(model_dir)
    if verify:
        verify_store(model_dir)
    state = read_state(layout)
    in_chain = {r.version for r in state.chain_of()}
    out = []
    for v, rec in state.versions.items():
        error = None
        try:
            meta = check_version(layout, rec).meta
        except ChainError as err:
            meta, error = {}, str(err)
        rows, metrics = meta.get("rows", {}), meta.get("metrics", {})
        out.append({"version": v, "kind": rec.kind, "hour": rec.hour, "hour_str": rec.hour_str,
                    "parent": rec.parent, "rows": rows, "total_rows": sum(rows.values()),
                    "bytes": meta.get("bytes"), "auc": metrics.get("auc"), "metrics": metrics,
                    "calibration": json_safe({k: metrics.get(k) for k in _CALIBRATION}),
                    "in_chain": v in in_chain, "committed_at": rec.committed_at, "error": error})
    return out


_CALIBRATION = ("pred_ctr", "actual_ctr", "copc", "reliability")


def verify_store(model_dir) -> dict:
    """Re-check the ledger, every visible version (meta sha256, sizes, CRC-32 of every file) and
    the links of the head's chain. Raises the first ``ChainError``; returns a summary."""
    layout = StoreLayout(model_dir)
    state = read_state(layout)
    nbytes = 0
    for rec in state.versions.values():
        meta = check_version(layout, rec, full=True).meta
        nbytes += sum(f["bytes"] for f in meta["files"])
    chain = load_chain(model_dir)
    return {"versions": len(state.versions), "bytes": nbytes, "head": state.head,
            "chain": [v.version for v in chain.versions], "missing": len(state.missing)}


def format_versions(rows: list[dict]) -> str:
    """A fixed-width table for the terminal."""
    lines = [f"{'version':9} {'kind':5} {'hour':13} {'parent':9} {'rows':>12} {'bytes':>14} "
             f"{'auc':>7} {'pred_ctr':>8} {'act_ctr':>8} {'copc':>6} {'ece':>7}  chain"]
    for r in rows:
        cal = r.get("calibration") or {}
        ece = (cal.get("reliability") or {}).get("ece")
        lines.append(f"{r['version']:9} {r['kind']:5} {r['hour_str']:13} {r['parent'] or '-':9} "
                     f"{r['total_rows']:>12,} {r['bytes'] or 0:>14,} {_num(r['auc'], 7, '.4f')} "
                     f"{_num(cal.get('pred_ctr'), 8, '.5f')} {_num(cal.get('actual_ctr'), 8, '.5f')} "
                     f"{_num(cal.get('copc'), 6, '.3f')} {_num(ece, 7, '.5f')}  "
                     f"{'*' if r['in_chain'] else ''}"
                     + (f"  BAD: {r['error']}" if r.get("error") else ""))
    return "\n".join(lines)


def _num(value, width: int, fmt: str) -> str:
    """``value`` formatted right-aligned, ``-`` when it is not a finite number."""
    good = isinstance(value, (int, float)) and value == value and abs(value) != float("inf")
    return f"{format(value, fmt) if good else '-':>{width}}"


def settled_hours(model_dir) -> dict:
    """``{"missing_hours": [...], "empty_hours": [...]}``: the hours recorded without a version
    (each ``{"hour", "hour_str", "reason", "recorded_at"}``), oldest first; an hour trained since
    it was recorded missing (backfilled) is left out."""
    return settled_hours_in(read_state(StoreLayout(model_dir)))


def settled_hours_in(state) -> dict:
    """:func:`settled_hours` of an already replayed ledger (the UI's chain shows the same)."""
    trained = set(state.by_hour) | set(state.pruned_hours)

    def rows(events):
        return sorted(({k: ev.get(k) for k in ("hour", "hour_str", "reason", "recorded_at")}
                       for ev in events if ev.get("hour") not in trained),
                      key=lambda r: r["hour"])

    return {"missing_hours": rows(state.missing), "empty_hours": rows(state.empty)}
