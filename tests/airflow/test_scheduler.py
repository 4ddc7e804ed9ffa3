"""Through the real scheduler, on both metadata databases (SQLite, the embedded default, and the
project's private PostgreSQL): api-server + scheduler + dag-processor on loopback, shared by the
tests of this module (one DAG per test), torn down after.

* a backfill of 3 hours whose middle partition never lands completes in order;
* "Recovering a failed hour" (docs/airflow.md) as written;
* the UI's backfill dialog through the REST API: unpause, then create the backfill 35 ms later.
  PostgreSQL takes it beside the running scheduler; SQLite refuses it (409) before anything is
  created, and the documented way (scheduler stopped) then trains the hours.
"""
from __future__ import annotations

import time

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.airflow.airflow_support import (api, chain_events, clear_and_rerun, ledger, streamtrain,
                             task_state_map, wait_until)
from streamtrain_airflow.airflow_home import query_rows, run_states, task_states
from streamtrain_airflow.demo import wait_backfills_complete, wait_runs
from streamtrain_airflow.store_view import order_problem
from trainer.config import load_config
from trainer.hours import hour_index, partition_relpath

# the first test of each database also starts the shared Airflow (pytest-timeout counts fixtures);
# on a loaded 2-core machine that and a backfill took longer than the suite's 600 s
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

DAY = "2026-01-01"
MODELS = ("gap", "recovery", "dialog")
#: scheduled (catchup) runs limited to the tests' hours: otherwise unpausing a DAG makes catchup
#: wait out a sensor timeout for every later hour
WINDOW = (f"{DAY}T00:00:00+00:00", f"{DAY}T02:00:00+00:00")
HOURS = [hour_index(f"{DAY}T0{i}") for i in range(3)]
QUICK_SENSOR = {"sensor_timeout_seconds": 5, "sensor_poke_seconds": 1}


def test_backfill_with_a_gap_trains_in_order(scheduler_airflow):
    shared, af = scheduler_airflow, scheduler_airflow.model("gap")
    streamtrain("gen-data", "--config", str(af.config), "--start", f"{DAY}T00", "--hours", "3",
                "--rows-per-hour", "1500", "--skip", f"{DAY}T01")
    assert shared.backfill(af, HOURS, QUICK_SENSOR)
    states = wait_runs(shared.running, af.dag_id, HOURS, timeout=400)
    assert states == {h: "success" for h in HOURS}, task_states(af.home, af.dag_id)
    tis = {(run[-25:], task): st for run, task, st in task_states(af.home, af.dag_id)}
    # the missing hour is skipped all the way, not failed
    assert {t: s for (r, t), s in tis.items() if "T01:00:00" in r} == {
        "wait_for_partition": "skipped", "train": "skipped", "choose_save": "skipped",
        "save_full": "skipped", "save_delta": "skipped", "publish": "skipped"}
    wait_backfills_complete(shared.running, af.dag_id, timeout=600)
    # a second backfill over the same hours re-runs nothing (reprocess failed only):
    # Airflow creates an empty backfill whose runs are all "already exists"
    before = (af.model_dir / "ledger.jsonl").read_text()
    shared.backfill(af, HOURS, None)
    wait_backfills_complete(shared.running, af.dag_id, timeout=600)
    assert wait_runs(shared.running, af.dag_id, HOURS, timeout=60) == states
    assert (af.model_dir / "ledger.jsonl").read_text() == before

    events = [(e["event"], e.get("kind"), e["hour_str"], e.get("version")) for e in ledger(af.model_dir)]
    assert events == [("commit", "full", f"{DAY}T00", "v000001"),
                      ("missing", None, f"{DAY}T01", None),
                      ("commit", "delta", f"{DAY}T02", "v000002")]
    streamtrain("chain", "--config", str(af.config), "--verify")


def test_failed_hour_blocks_later_hours_until_recovered(scheduler_airflow):
    """Hour 1 has a bad row (label 3 with ``bad_rows = "fail"``): its ``train`` fails for real, at
    once (bad data exits with ``EXIT_BAD_INPUT``, not retried), and run 1 is *failed*. Run 2 then
    takes the only slot and waits on ``depends_on_past`` forever. The operator fixes the file and
    follows "Recovering a failed hour": mark run 2 failed (REST), ``airflow tasks clear -s <H>
    -e <H+1> -y``, check the chain. Every hour ends up in the chain once, in order."""
    shared, af = scheduler_airflow, scheduler_airflow.model("recovery")
    running = shared.running
    streamtrain("gen-data", "--config", str(af.config), "--start", f"{DAY}T00", "--hours", "3",
                "--rows-per-hour", "1500")
    bad = sorted((af.data_root / partition_relpath(HOURS[1])).glob("part-*.parquet"))[0]
    good = bad.read_bytes()
    table = pq.read_table(bad)
    label = table.column("label")
    first = pc.equal(pc.cumulative_sum(pc.if_else(pc.is_valid(label), 1, 0)), 1)  # row 0
    table = table.set_column(table.schema.get_field_index("label"), "label",
                             pc.if_else(first, 3, label))
    pq.write_table(table, bad)
    assert pq.read_table(bad).column("label")[0].as_py() == 3

    assert shared.backfill(af, HOURS, QUICK_SENSOR)
    # hour 1 fails (bad data: no retries); run 2 holds the slot, its train blocked on the past
    states = wait_runs(running, af.dag_id, HOURS, timeout=400)
    assert list(states.values())[:2] == ["success", "failed"], task_state_map(af)
    wait_until("run 2 blocked",
               lambda: task_state_map(af).get(("02", "wait_for_partition")) == "success",
               120, running, af)
    time.sleep(5)  # long enough for the scheduler to have started train(2), were it allowed
    tis = task_state_map(af)
    assert tis[("01", "train")] == "failed"
    assert tis[("02", "train")] is None, tis  # no state: waits on depends_on_past
    assert run_states(af.home, af.dag_id)[f"{DAY} 02:00:00.000000"] == "running"
    assert [e["hour_str"] for e in ledger(af.model_dir)] == [f"{DAY}T00"]
    # the store's guard would refuse too, had train(2) been started (e.g. marked success)
    assert "the first 2026-01-01T01" in order_problem(load_config(str(af.config)), HOURS[2])

    # step 1: the failed train's log: the command, the failing rank's error line, the exit code
    logs = sorted(af.home.glob(f"logs/dag_id={af.dag_id}/run_id=*T01:00:00*/task_id=train/attempt=*.log"))
    assert len(logs) == 1, logs  # bad input data is not retried
    text = logs[-1].read_text(errors="replace")
    assert "running: " in text and "bad input data: mpiexec exited with code 3" in text, \
        text[-3000:]
    assert "[streamtrain] error: rank" in text, text[-3000:]
    assert f"{bad.name}: column 'label', row 0: label must be 0 or 1, got 3" in text

    bad.write_bytes(good)  # the operator fixes the data

    # step 2: mark the blocked newer run failed (REST, as documented)
    run2 = next(r for r, t, s in task_states(af.home, af.dag_id) if f"{DAY}T02" in r)
    status, _ = api(af, "PATCH", f"/api/v2/dags/{af.dag_id}/dagRuns/{run2}", {"state": "failed"})
    assert status == 200
    clear_and_rerun(af, running, HOURS, f"{DAY}T01", f"{DAY}T02")  # step 3

    # every hour once, in order, each on its predecessor
    assert chain_events(af.model_dir) == [
        ("commit", "full", f"{DAY}T00", "v000001", None),
        ("commit", "delta", f"{DAY}T01", "v000002", "v000001"),
        ("commit", "delta", f"{DAY}T02", "v000003", "v000002")]
    assert len((af.model_dir / "donefile").read_text().splitlines()) == 3
    streamtrain("chain", "--config", str(af.config), "--verify")  # step 4


def test_the_ui_backfill_dialog_unpause_then_create(scheduler_airflow):
    shared, af = scheduler_airflow, scheduler_airflow.model("dialog")
    streamtrain("gen-data", "--config", str(af.config), "--start", f"{DAY}T00", "--hours", "3",
                "--rows-per-hour", "1500")
    # what the dialog sends: unpause, then create at once
    status, _ = api(af, "PATCH", f"/api/v2/dags/{af.dag_id}?update_mask=is_paused",
                     {"is_paused": False})
    assert status == 200
    time.sleep(0.035)
    status, body = api(af, "POST", "/api/v2/backfills", {
        "dag_id": af.dag_id, "from_date": f"{DAY}T00:00:00Z", "to_date": f"{DAY}T02:00:00Z",
        "run_backwards": False, "dag_run_conf": QUICK_SENSOR, "reprocess_behavior": "failed",
        "max_active_runs": 1})
    backfills = lambda: query_rows(af.home, "SELECT count(*) FROM backfill WHERE dag_id = :d",  # noqa: E731
                              d=af.dag_id)[0][0]
    if shared.db == "sqlite":
        assert status == 409, body
        assert "refused on SQLite" in body["detail"] and "Nothing was created" in body["detail"]
        assert backfills() == 0
        shared.running.check_alive()  # the scheduler lives on
        assert shared.backfill(af, HOURS, QUICK_SENSOR)  # the way the refusal names
    else:
        assert status == 200, body
        assert (body["dag_id"], body["max_active_runs"]) == (af.dag_id, 1)
        assert backfills() == 1
    states = wait_runs(shared.running, af.dag_id, HOURS, timeout=500)
    assert states == {h: "success" for h in HOURS}, task_state_map(af)
    shared.running.check_alive()
    assert [(e["event"], e.get("kind"), e["hour_str"]) for e in ledger(af.model_dir)] == [
        ("commit", "full", f"{DAY}T00"), ("commit", "delta", f"{DAY}T01"),
        ("commit", "delta", f"{DAY}T02")]
    streamtrain("chain", "--config", str(af.config), "--verify")
