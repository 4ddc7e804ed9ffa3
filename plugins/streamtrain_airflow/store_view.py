"""Read-only questions the Airflow tasks ask the model store (``trainer.store``).

Writing (commit, mark-missing, publish) always goes through the ``streamtrain`` command line, the
one documented way in; this module only reads the ledger, a version's ``meta.json`` and the
donefile, so a task can decide cheaply that its hour is already done (CONTRACT §3 "exactly once").
An hour's status and the order rule are the store's (``trainer.store.status``): asked, never
re-derived here.
"""
from __future__ import annotations

from trainer.store import StoreError


def _layout(cfg):
    from trainer.store.layout import StoreLayout

    return StoreLayout(cfg.model_dir)


def hour_status(cfg, hour: int):
    """Where ``hour`` stands in the chain of ``cfg.model_dir`` (``trainer.store.status``, the one
    place that decides it): committed, pruned, missing, empty, staged or unsettled."""
    from trainer.store.status import hour_status as status

    return status(cfg.model_dir, hour)


def order_problem(cfg, hour: int) -> str:
    """Why ``hour`` may not train yet, "" if it may (``trainer.store.status.order_problem``)."""
    from trainer.store.status import order_problem as problem

    return problem(cfg.model_dir, hour)


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
        elif ev.get("event") in ("missing", "empty") and ev.get("hour") not in state.by_hour:
            rows.append({"hour": ev.get("hour"), "hour_str": ev.get("hour_str"),
                         "event": ev["event"], "version": None, "kind": ev["event"],
                         "metrics": {}, "reason": ev.get("reason", "")})
    return rows
