"""Read-only questions the Airflow tasks ask the model store (``trainer.store``).

Writing (commit, mark-missing, publish) always goes through the ``streamtrain`` command line, the
one documented way in; this module only reads the ledger, a version's ``meta.json`` and the
donefile, so a task can decide cheaply that its hour is already done (CONTRACT §3 "exactly once").
"""
from __future__ import annotations

from dataclasses import dataclass, field

from trainer.store import StoreError


@dataclass(frozen=True)
class HourStatus:
    """Where a data hour stands in the chain."""

    hour: int
    state: str  #: "committed", "pruned" (committed, folder since pruned), "missing" or "absent"
    version: str | None = None  #: the committed version (``state == "committed"``)
    kind: str | None = None  #: "full" or "delta" (``state == "committed"``)
    head: str | None = None  #: the head of the chain
    staged_hours: tuple[str, ...] = field(default=())  #: hours staged and not committed yet


def _layout(cfg):
    from trainer.store.layout import StoreLayout

    return StoreLayout(cfg.model_dir)


def hour_status(cfg, hour: int) -> HourStatus:
    """Replay the ledger of ``cfg.model_dir`` and say where ``hour`` stands."""
    from trainer.store.ledger import read_state

    layout = _layout(cfg)
    state = read_state(layout)
    staged = ()
    if layout.staging.is_dir():
        staged = tuple(sorted(p.name for p in layout.staging.iterdir()
                              if p.is_dir() and not p.name.startswith(".")))
    version = state.by_hour.get(hour)
    if version is not None:
        rec = state.versions[version]
        return HourStatus(hour, "committed", version, rec.kind, state.head, staged)
    if hour in state.pruned_hours:
        rec = state.pruned_hours[hour]
        return HourStatus(hour, "pruned", rec.version, rec.kind, state.head, staged)
    if any(ev.get("hour") == hour for ev in state.missing):
        return HourStatus(hour, "missing", head=state.head, staged_hours=staged)
    return HourStatus(hour, "absent", head=state.head, staged_hours=staged)


def order_problem(cfg, hour: int) -> str:
    """Why `hour` may not train yet ("" if it may): hours train in order, so every hour between
    the head's and `hour` must be in the chain or recorded missing -- unless the chain is empty
    (the first hour) or `hour` is older than the head (a late hour, appended on the head)."""
    from trainer.hours import hour_str
    from trainer.store.ledger import read_state

    state = read_state(_layout(cfg))
    if state.head is None:
        return ""
    head_hour = state.versions[state.head].hour
    settled = set(state.by_hour) | {ev.get("hour") for ev in state.missing}
    unsettled = [h for h in range(head_hour + 1, hour) if h not in settled]
    if not unsettled:
        return ""
    first = hour_str(unsettled[0])
    return (f"{len(unsettled)} hour(s) before {hour_str(hour)} are neither trained nor recorded "
            f"missing, the first {first} (the head is {state.head}, hour {hour_str(head_hour)}): "
            f"hours train in order. Recover {first} first (clear its run), or record it missing "
            f"with `streamtrain mark-missing --hour {first}`")


def version_meta(cfg, version: str) -> dict:
    """The ``meta.json`` of a committed version."""
    from trainer.store import read_version_meta

    return read_version_meta(cfg.model_dir, version)


def published_versions(cfg) -> set[str]:
    """Versions listed in the donefile."""
    from trainer.store import read_donefile

    return {record.get("version") for record in read_donefile(cfg.model_dir)}


def chain_rows(cfg) -> list[dict]:
    """One row per ledger event that concerns an hour, in ledger order (for the demo's table).

    Committed versions carry their ``meta.json`` metrics; rolled-back/pruned ones are left out.
    """
    from trainer.store.ledger import read_state

    state = read_state(_layout(cfg))
    rows = []
    for ev in state.events:
        if ev.get("event") == "commit" and ev.get("version") in state.versions:
            meta = {}
            try:
                meta = version_meta(cfg, ev["version"])
            except (OSError, ValueError, StoreError):
                pass
            rows.append({"hour": ev["hour"], "hour_str": ev.get("hour_str"), "event": "commit",
                         "version": ev["version"], "kind": ev.get("kind"),
                         "metrics": meta.get("metrics", {})})
        elif ev.get("event") == "missing" and ev.get("hour") not in state.by_hour:
            rows.append({"hour": ev.get("hour"), "hour_str": ev.get("hour_str"), "event": "missing",
                         "version": None, "kind": "missing", "metrics": {},
                         "reason": ev.get("reason", "")})
    return rows
