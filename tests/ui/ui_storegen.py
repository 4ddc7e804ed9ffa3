"""Synthetic model stores for the UI tests: a ledger plus one ``meta.json`` per version, with
values that are simple functions of the version number so tests can check them exactly.

Version ``i`` (1-based) trains data hour ``start + i - 1`` (skipping `missing` and `empty` hours), is a full
base when its hour of day is 0, and has::

    auc = 0.6 + i / 10_000      logloss = 0.5 - i / 100_000     rows = 1000 * i
    table_rows = 100 * i        ids_admitted = 10 + i           ids_filtered = i % 7
    rows_evicted = i % 5        files: 2 shards of 100 * i and 50 * i bytes
    seconds = {load: 1.0, train: 2.0 + i, stage: 0.5, commit: 0.25}
    airflow = {dag_id: "streamtrain_<name>", run_id: "scheduled__<hour>"}
"""
from __future__ import annotations

import json
from pathlib import Path

from trainer.hours import hour_index, hour_str
from trainer.store.layout import SCHEMA_VERSION, sha256_hex

START = hour_index("2026-11-01T00")
REASONS = {"missing": "partition never completed", "empty": "partition has no rows"}


def expected(i: int) -> dict:
    return {"auc": 0.6 + i / 10_000, "logloss": 0.5 - i / 100_000, "rows": 1000 * i,
            "table_rows": 100 * i, "ids_admitted": 10 + i, "ids_filtered": i % 7,
            "rows_evicted": i % 5, "bytes": 150 * i, "rows_per_s": 500.0 + i,
            "pred_ctr": 0.1 + i / 1e6, "actual_ctr": 0.1, "copc": 0.1 / (0.1 + i / 1e6),
            "ece": i / 1e6}


def run_id(hour: int) -> str:
    return f"scheduled__{hour_str(hour)}:00:00+00:00"


def make_store(model_dir: Path, name: str, n: int, *, start: int = START,
               missing: tuple[int, ...] = (), empty: tuple[int, ...] = (),
               rollback_last: bool = False) -> list[dict]:
    """Write `n` versions; hours in `missing` (offsets from `start`) are recorded as missing
    instead, hours in `empty` as empty (complete, no rows). With `rollback_last`, the last version is rolled back and re-committed as
    version ``n + 1`` for the same hour. Returns the ledger events written."""
    model_dir = Path(model_dir)
    (model_dir / "versions").mkdir(parents=True, exist_ok=True)
    events, seq, hour, base, parent = [], 0, start, None, None
    base_of = {}  # version -> its base
    i = 0
    while i < n:
        seq += 1
        if hour - start in missing or hour - start in empty:
            event = "missing" if hour - start in missing else "empty"
            events.append({"seq": seq, "event": event, "hour": hour, "hour_str": hour_str(hour),
                           "reason": REASONS[event], "recorded_at": "2026-11-27T00:00:00Z"})
            hour += 1
            continue
        i += 1
        events.append(_commit(model_dir, name, seq, i, hour, parent, base))
        parent = events[-1]["version"]
        base = parent if events[-1]["kind"] == "full" else base
        base_of[parent] = base
        hour += 1
    if rollback_last and n:
        last = events[-1]
        seq += 1
        events.append({"seq": seq, "event": "rollback", "version": last["version"],
                       "hour": last["hour"], "hour_str": last["hour_str"]})
        seq += 1
        events.append(_commit(model_dir, name, seq, n + 1, last["hour"], last["parent"],
                              base_of.get(last["parent"])))
    with open(model_dir / "ledger.jsonl", "w") as f:
        for ev in events:
            f.write(json.dumps(ev) + "\n")
    return events


def _commit(model_dir: Path, name: str, seq: int, i: int, hour: int, parent, base) -> dict:
    version = f"v{i:06d}"
    kind = "full" if hour % 24 == 0 or parent is None else "delta"
    e = expected(i)
    meta = {
        "schema_version": SCHEMA_VERSION, "version": version, "kind": kind, "hour": hour,
        "hour_str": hour_str(hour), "parent": parent, "base": version if kind == "full" else base,
        "num_shards": 2, "dim": 8, "optimizer_rule": "adagrad", "config_hash": "c0ffee",
        "code_version": "0.1.0",
        "partition": {"path": f"/data/dt=x/hour={hour % 24:02d}", "files": []},
        "files": [{"name": "shard-00000.parquet", "rows": i, "bytes": 100 * i, "sha256": "a"},
                  {"name": "shard-00001.parquet", "rows": i, "bytes": 50 * i, "sha256": "b"}],
        "rows": {"admitted": 100 * i, "pending": i, "tombstones": i % 5},
        "metrics": {"auc": e["auc"], "logloss": e["logloss"], "pred_ctr": e["pred_ctr"],
                    "actual_ctr": e["actual_ctr"], "copc": e["copc"], "rows": e["rows"],
                    "reliability": {"edges": [0.0, 0.1, 1.0], "shows": [0.0, 1000.0 * i],
                                    "pred_ctr": [None, e["pred_ctr"]],
                                    "actual_ctr": [None, e["actual_ctr"]], "ece": e["ece"]},
                    "rows_per_s": e["rows_per_s"], "table_rows": e["table_rows"],
                    "ids_admitted": e["ids_admitted"], "ids_filtered": e["ids_filtered"],
                    "rows_evicted": e["rows_evicted"], "bytes_saved": e["bytes"],
                    "bad_rows": 0, "dense_nulls": 0,
                    "seconds": {"load": 1.0, "train": 2.0 + i, "stage": 0.5, "commit": 0.25}},
        "airflow": {"dag_id": f"streamtrain_{name}", "run_id": run_id(hour)},
    }
    d = model_dir / "versions" / version
    d.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(meta).encode()
    (d / "meta.json").write_bytes(raw)
    return {"seq": seq, "event": "commit", "version": version, "kind": kind, "hour": hour,
            "hour_str": hour_str(hour), "parent": parent, "meta_sha256": sha256_hex(raw),
            "committed_at": "2026-11-27T00:00:00Z"}
