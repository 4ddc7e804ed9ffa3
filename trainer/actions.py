"""The hourly steps after training, given a model config: save, mark missing, publish, list.

The command line and the Airflow tasks both call these, so an hour is saved the same way however
it is run. Each is safe to repeat (a retry or a cleared task never applies an hour twice).
"""
from __future__ import annotations

import json

from trainer import store
from trainer.config import ModelConfig
from trainer.hours import hour_str


def save(cfg: ModelConfig, hour: int, kind: str | None = None) -> store.SaveResult:
    """Commit the staged version of `hour` (a no-op that says so if it is already committed)."""
    return store.save(cfg.model_dir, hour, kind=kind, publish=False)


def mark_missing(cfg: ModelConfig, hour: int, reason: str) -> str:
    """Record `hour` as missing; later hours continue from the newest model."""
    state = store.read_state(store.StoreLayout(cfg.model_dir))
    if hour in state.by_hour:
        return f"hour {hour_str(hour)} is committed as {state.by_hour[hour]}; not marking missing"
    if any(ev.get("hour") == hour for ev in state.missing):
        return f"hour {hour_str(hour)} already recorded as missing"
    store.mark_missing(cfg.model_dir, hour, reason)
    return f"hour {hour_str(hour)} recorded as missing: {reason}"


def version_of_hour(cfg: ModelConfig, hour: int) -> str:
    state = store.read_state(store.StoreLayout(cfg.model_dir))
    if hour not in state.by_hour:
        raise store.StoreError(f"hour {hour_str(hour)} is not committed in {cfg.model_dir}")
    return state.by_hour[hour]


def publish(cfg: ModelConfig, hour: int) -> dict:
    """Append the hour's version to the donefile (once) and return its donefile record."""
    version = version_of_hour(cfg, hour)
    store.publish(cfg.model_dir, version)
    for record in reversed(store.read_donefile(cfg.model_dir)):
        if record.get("version") == version:
            return record
    raise store.StoreError(f"{version} was published but is not in the donefile")


def version_rows(cfg: ModelConfig) -> list[dict]:
    """One summary dict per committed version of the head's lineage and the rest, oldest first."""
    rows = []
    for version in store.read_state(store.StoreLayout(cfg.model_dir)).versions.values():
        meta = store.read_version_meta(cfg.model_dir, version.version)
        metrics = meta.get("metrics", {})
        rows.append({
            "version": version.version, "kind": version.kind, "hour": version.hour_str,
            "parent": version.parent, "rows": metrics.get("rows"),
            "table_rows": metrics.get("table_rows"), "bytes": meta.get("bytes"),
            "auc": metrics.get("auc"), "logloss": metrics.get("logloss"),
            "seconds": metrics.get("seconds", {}),
        })
    return rows


def chain_command(cfg: ModelConfig, verify: bool = False, as_json: bool = False) -> int:
    """Print the versions; with `verify` re-check every file and link (exit 1 if broken)."""
    rows = version_rows(cfg)
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'version':9} {'kind':5} {'hour':13} {'rows':>8} {'table':>9} {'bytes':>11} auc")
        for r in rows:
            auc = f"{r['auc']:.4f}" if isinstance(r["auc"], float) else "-"
            print(f"{r['version']:9} {r['kind']:5} {r['hour']:13} {r['rows'] or 0:>8} "
                  f"{r['table_rows'] or 0:>9} {r['bytes'] or 0:>11} {auc}")
    if verify:
        try:
            chain = store.load_chain(cfg.model_dir, num_shards=cfg.table_num_shards, verify=True)
        except store.ChainError as err:
            print(f"streamtrain: error: chain verification failed: {err}")
            return 1
        print(f"chain verified: base {chain.base}, head {chain.head}, {len(chain)} version(s)")
    return 0
