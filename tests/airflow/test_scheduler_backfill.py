"""Through the real scheduler: api-server + scheduler + dag-processor on loopback, torn down after.

A backfill of 3 hours whose middle partition never lands completes in order: hour 0 full, hour 1
recorded missing (skipped, not failed), hour 2 a delta on hour 0.
"""
from __future__ import annotations

import os

import pytest

from tests.airflow.airflow_support import airflow_backfilling, ledger, streamtrain
from streamtrain_airflow.airflow_home import (
    task_states, write_config,
)
from streamtrain_airflow.demo import backfill, wait_backfills_complete, wait_runs
from trainer.hours import hour_index

pytestmark = pytest.mark.slow


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_backfill_with_a_gap_trains_in_order(af):
    streamtrain("gen-data", "--config", str(af.config), "--start", "2026-01-01T00", "--hours", "3",
                "--rows-per-hour", "1500", "--skip", "2026-01-01T01")
    hours = [hour_index(f"2026-01-01T0{i}") for i in range(3)]
    # scheduled (catchup) runs limited to these hours, as the demo does: otherwise unpausing the
    # DAG makes catchup wait out a sensor timeout for every later hour
    write_config(af.home, port=af.port, config_dir=af.configs, start="2026-01-01T00:00:00+00:00",
                 end="2026-01-01T02:00:00+00:00")
    with airflow_backfilling(af, hours, {"sensor_timeout_seconds": 5, "sensor_poke_seconds": 1}) as running:
        states = wait_runs(running, af.dag_id, hours, timeout=400)
        assert states == {h: "success" for h in hours}, task_states(af.home, af.dag_id)
        tis = {(run[-25:], task): st for run, task, st in task_states(af.home, af.dag_id)}
        # the missing hour is skipped all the way, not failed
        assert {t: s for (r, t), s in tis.items() if "T01:00:00" in r} == {
            "wait_for_partition": "skipped", "train": "skipped", "choose_save": "skipped",
            "save_full": "skipped", "save_delta": "skipped", "publish": "skipped"}
        wait_backfills_complete(running, af.dag_id)
        # a second backfill over the same hours re-runs nothing (reprocess failed only):
        # Airflow creates an empty backfill whose runs are all "already exists"
        before = (af.model_dir / "ledger.jsonl").read_text()
        backfill(af.home, af.dag_id, hours[0], hours[-1], None)
        wait_backfills_complete(running, af.dag_id)
        assert wait_runs(running, af.dag_id, hours, timeout=30) == states
        assert (af.model_dir / "ledger.jsonl").read_text() == before
    assert all(_group_gone(p.pid) for p in running.procs.values())

    events = [(e["event"], e.get("kind"), e["hour_str"], e.get("version")) for e in ledger(af.model_dir)]
    assert events == [("commit", "full", "2026-01-01T00", "v000001"),
                      ("missing", None, "2026-01-01T01", None),
                      ("commit", "delta", "2026-01-01T02", "v000002")]
    streamtrain("chain", "--config", str(af.config), "--verify")
