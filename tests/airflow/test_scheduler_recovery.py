"""Recovering a failed hour through the real scheduler, following docs/airflow.md as written.

Hour 1 has a bad row (label 3 with ``bad_rows = "fail"``): its ``train`` fails for real, at once
(bad data exits with ``EXIT_BAD_INPUT``, which is not retried), and run 1 is *failed*. Run 2 then takes the only slot and waits on ``depends_on_past``
forever (its ``train`` has no state). The operator fixes the file and follows "Recovering a failed
hour": mark run 2 failed (REST), ``airflow tasks clear -s <H> -e <H+1> -y``, check the chain. Every
hour ends up in the chain once, in order (also after the backfill was marked complete).
"""
from __future__ import annotations

import json
import time
import urllib.request

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.airflow.airflow_support import (airflow_backfilling, chain_events, clear_and_rerun, ledger,
                             streamtrain, task_state_map, wait_until)
from streamtrain_airflow.airflow_home import (
    admin_password, run_states, task_states, write_config,
)
from streamtrain_airflow.demo import wait_runs
from streamtrain_airflow.store_view import order_problem
from trainer.config import load_config
from trainer.hours import hour_index, partition_relpath

pytestmark = pytest.mark.slow

DAY = "2026-01-01"


def _api(af, method: str, path: str, body: dict | None = None) -> dict:
    """Call the REST API as user admin (simple auth manager: password from the generated file)."""
    base = f"http://127.0.0.1:{af.port}"
    req = urllib.request.Request(f"{base}/auth/token", method="POST",
                                 data=json.dumps({"username": "admin",
                                                  "password": admin_password(af.home)}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        token = json.loads(resp.read())["access_token"]
    req = urllib.request.Request(f"{base}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"{}")


def test_failed_hour_blocks_later_hours_until_recovered(af):
    streamtrain("gen-data", "--config", str(af.config), "--start", f"{DAY}T00", "--hours", "3",
                "--rows-per-hour", "1500")
    hours = [hour_index(f"{DAY}T0{i}") for i in range(3)]
    bad = sorted((af.data_root / partition_relpath(hours[1])).glob("part-*.parquet"))[0]
    good = bad.read_bytes()
    table = pq.read_table(bad)
    label = table.column("label")
    first = pc.equal(pc.cumulative_sum(pc.if_else(pc.is_valid(label), 1, 0)), 1)  # row 0
    table = table.set_column(table.schema.get_field_index("label"), "label",
                             pc.if_else(first, 3, label))
    pq.write_table(table, bad)
    assert pq.read_table(bad).column("label")[0].as_py() == 3

    write_config(af.home, port=af.port, config_dir=af.configs, start=f"{DAY}T00:00:00+00:00",
                 end=f"{DAY}T02:00:00+00:00")
    with airflow_backfilling(af, hours, {"sensor_timeout_seconds": 5, "sensor_poke_seconds": 1}) as running:
        # hour 1 fails (bad data: no retries); run 2 holds the slot, its train blocked on the past
        states = wait_runs(running, af.dag_id, hours, timeout=400)
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
        assert "the first 2026-01-01T01" in order_problem(load_config(str(af.config)), hours[2])

        # step 1: the failed train's log: the command, the failing rank's error line, the exit code
        logs = sorted(af.home.glob("logs/dag_id=*/run_id=*T01:00:00*/task_id=train/attempt=*.log"))
        assert len(logs) == 1, logs  # bad input data is not retried
        text = logs[-1].read_text(errors="replace")
        assert "running: " in text and "bad input data: mpiexec exited with code 3" in text, \
            text[-3000:]
        assert "[streamtrain] error: rank" in text, text[-3000:]
        assert f"{bad.name}: column 'label', row 0: label must be 0 or 1, got 3" in text

        bad.write_bytes(good)  # the operator fixes the data

        # step 2: mark the blocked newer run failed (REST, as documented)
        run2 = next(r for r, t, s in task_states(af.home, af.dag_id) if f"{DAY}T02" in r)
        _api(af, "PATCH", f"/api/v2/dags/{af.dag_id}/dagRuns/{run2}", {"state": "failed"})
        clear_and_rerun(af, running, hours, f"{DAY}T01", f"{DAY}T02")  # step 3

    # every hour once, in order, each on its predecessor
    assert chain_events(af.model_dir) == [
        ("commit", "full", f"{DAY}T00", "v000001", None),
        ("commit", "delta", f"{DAY}T01", "v000002", "v000001"),
        ("commit", "delta", f"{DAY}T02", "v000003", "v000002")]
    assert len((af.model_dir / "donefile").read_text().splitlines()) == 3
    streamtrain("chain", "--config", str(af.config), "--verify")  # step 4
