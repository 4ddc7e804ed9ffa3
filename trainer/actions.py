"""The hourly steps after training, given a model config: save, mark missing, publish, list.

The command line and the Airflow tasks both call these, so an hour is saved the same way however
it is run. Each is safe to repeat (a retry or a cleared task never applies an hour twice).
"""
from __future__ import annotations

import sys

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


def chain_command(cfg: ModelConfig, verify: bool = False, as_json: bool = False) -> int:
    """Print the versions and the hours recorded missing or empty; with `verify` re-check every
    file and link. Exits 1 if a version is bad (every version is still listed, the bad marked).

    ``--json`` prints one object: ``versions`` (``trainer.store.verify.list_versions`` rows),
    ``missing_hours`` and ``empty_hours`` (``settled_hours``), ``head``; strict JSON (a metric
    that is not a number, e.g. the AUC of a one-class hour, is ``null``).
    """
    from trainer.jsonsafe import strict_dumps
    from trainer.store.verify import format_versions, list_versions, settled_hours, verify_store

    rows = list_versions(cfg.model_dir)
    hours = settled_hours(cfg.model_dir)
    if as_json:
        head = rows[-1]["version"] if rows else None
        print(strict_dumps({"head": head, "versions": rows, **hours}, indent=1))
    else:
        print(format_versions(rows))
        for name, label in (("missing_hours", "missing"), ("empty_hours", "empty")):
            if hours[name]:
                print(f"{label} hours: " + ", ".join(h["hour_str"] for h in hours[name]))
    bad = [r["version"] for r in rows if r["error"]]
    if bad:
        print(f"streamtrain: error: {len(bad)} bad version(s): {', '.join(bad)}", file=sys.stderr)
        return 1
    if verify:
        try:
            summary = verify_store(cfg.model_dir)
            store.load_chain(cfg.model_dir, num_shards=cfg.table_num_shards)
        except store.ChainError as err:
            print(f"streamtrain: error: chain verification failed: {err}")
            return 1
        print(f"chain verified: {summary['versions']} version(s), head {summary['head']}, "
              f"{summary['missing']} missing hour(s), {len(hours['empty_hours'])} empty "
              f"hour(s), {summary['bytes']:,} bytes")
    return 0


def predict(cfg: ModelConfig, version: str, input_path: str, output_path: str) -> str:
    """Score a Parquet file or folder of the input schema (the label column optional) with a
    committed version ("head" = newest; "v1" = "v000001"); the summary as strict JSON."""
    from trainer.jsonsafe import strict_dumps
    from trainer.store.predict import predict as score

    return strict_dumps(score(cfg, version, input_path, output_path))


def prune(cfg: ModelConfig, keep_bases: int | None = None) -> str:
    """Remove versions older than the newest `keep_bases` bases that no load needs."""
    from trainer.store.prune import prune as remove

    removed = remove(cfg.model_dir, keep_bases or cfg.save.keep_bases)
    return f"pruned {len(removed)} version(s)" + (f": {', '.join(removed)}" if removed else "")
