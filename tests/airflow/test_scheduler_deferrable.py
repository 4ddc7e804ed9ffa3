"""The deferrable sensor through the real scheduler and an ``airflow triggerer`` process.

``[streamtrain] sensor_deferrable = True``; a backfill of 2 hours. Hour 0's ``_SUCCESS`` lands while
its sensor is deferred (the triggerer's ``PartitionTrigger`` fires ``landed``: full v1); hour 1
never lands (the trigger's deadline fires ``timeout``: recorded missing, skipped).
"""
from __future__ import annotations

import configparser
import time

import pytest

from tests.airflow.airflow_support import airflow_backfilling, ledger, streamtrain
from streamtrain_airflow.airflow_home import (
    COMPONENTS, task_states, write_config,
)
from streamtrain_airflow.demo import wait_runs
from trainer.hours import hour_index, partition_relpath

pytestmark = pytest.mark.slow

DAY = "2026-01-01"


def _sensor_state(af, hh: str) -> str | None:
    for run_id, task, state in task_states(af.home, af.dag_id):
        if task == "wait_for_partition" and f"T{hh}:00:00" in run_id:
            return state
    return None


def _log(af, hh: str, trigger: bool = False) -> str:
    """The sensor's task log of run ``hh`` (try 1), or the triggerer's log of its trigger."""
    folder = f"logs/dag_id={af.dag_id}/run_id=backfill__{DAY}T{hh}:00:00+00:00/task_id=wait_for_partition"
    pattern = "attempt=1.log.trigger.*.log" if trigger else "attempt=1.log"
    return "".join(p.read_text(errors="replace") for p in sorted(af.home.glob(f"{folder}/{pattern}")))


def test_deferrable_sensor_with_a_triggerer(af):
    streamtrain("gen-data", "--config", str(af.config), "--start", f"{DAY}T00", "--hours", "2",
                "--rows-per-hour", "1500", "--skip", f"{DAY}T01")
    hours = [hour_index(f"{DAY}T00"), hour_index(f"{DAY}T01")]
    success = af.data_root / partition_relpath(hours[0]) / "_SUCCESS"
    success.unlink()

    write_config(af.home, port=af.port, config_dir=af.configs, start=f"{DAY}T00:00:00+00:00",
                 end=f"{DAY}T01:00:00+00:00")
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(af.home / "airflow.cfg")
    cfg["streamtrain"]["sensor_deferrable"] = "True"
    with open(af.home / "airflow.cfg", "w") as f:
        cfg.write(f)
    with airflow_backfilling(af, hours, {"sensor_timeout_seconds": 20, "sensor_poke_seconds": 1},
                             components=COMPONENTS + ("triggerer",)) as running:
        deadline = time.monotonic() + 180
        # the sensor deferred (its worker slot is free) and the triggerer's trigger has polled
        while not (_sensor_state(af, "00") == "deferred"
                   and "_SUCCESS not there yet" in _log(af, "00", trigger=True)):
            running.check_alive()
            assert time.monotonic() < deadline, task_states(af.home, af.dag_id)
            time.sleep(0.5)
        success.touch()
        states = wait_runs(running, af.dag_id, hours, timeout=300)
        assert states == {h: "success" for h in hours}, task_states(af.home, af.dag_id)
        assert _sensor_state(af, "00") == "success"
        assert _sensor_state(af, "01") == "skipped"

    events = [(e["event"], e.get("kind"), e["hour_str"]) for e in ledger(af.model_dir)]
    assert events == [("commit", "full", f"{DAY}T00"), ("missing", None, f"{DAY}T01")]
    task0, task1 = _log(af, "00"), _log(af, "01")
    assert "deferrable: in the triggerer" in task0 and "Pausing task as DEFERRED" in task0
    assert "trigger fired: {'status': 'landed'" in task0, task0[-3000:]
    assert "schema ok: 2 file(s), 1500 rows" in task0
    assert "trigger fired: {'status': 'timeout'" in task1, task1[-3000:]
    assert "recorded as missing" in task1
    # the triggerer's own log of each trigger (a file beside the task's)
    assert "_SUCCESS found" in _log(af, "00", trigger=True)
    assert "'status': 'timeout'" in _log(af, "01", trigger=True)
