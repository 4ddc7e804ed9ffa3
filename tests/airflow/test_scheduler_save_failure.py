"""A save that fails through the real scheduler, and its recovery as docs/airflow.md says.

Hour 01's staged version is damaged after its train and before its save. To place that between
two tasks without racing the scheduler, the test lets hour 01 land, waits until its train has
claimed the hour's staging (the claim takes the store lock, briefly), then holds the store lock
(every save takes it) until ``save_delta`` of 01 is running, flips a byte of a staged shard file
and releases the lock. The save refuses the
version on every attempt (its CRC-32 names the file), so run 01 fails with the chain unchanged.
Clearing run 01, every task, retrains the hour (the staging is replaced) and commits it once.
"""
from __future__ import annotations

import fcntl

import pytest

from tests.airflow.airflow_support import (airflow_backfilling, chain_events, clear_and_rerun, ledger,
                             streamtrain, task_state_map, wait_until)
from streamtrain_airflow.airflow_home import run_states, write_config
from streamtrain_airflow.demo import wait_runs
from trainer.hours import hour_index, partition_relpath
from trainer.store import StoreLayout
from trainer.store.claim import claim_path

pytestmark = pytest.mark.slow

DAY = "2026-01-01"


def test_failed_save_leaves_the_chain_and_clearing_the_run_retrains_it(af):
    streamtrain("gen-data", "--config", str(af.config), "--start", f"{DAY}T00", "--hours", "2",
                "--rows-per-hour", "1500")
    hours = [hour_index(f"{DAY}T0{i}") for i in range(2)]
    landed = af.data_root / partition_relpath(hours[1]) / "_SUCCESS"
    landed.unlink()  # hour 01 has not landed yet
    layout = StoreLayout(af.model_dir)

    write_config(af.home, port=af.port, config_dir=af.configs, start=f"{DAY}T00:00:00+00:00",
                 end=f"{DAY}T01:00:00+00:00")
    conf = {"sensor_timeout_seconds": 900, "sensor_poke_seconds": 1}
    with airflow_backfilling(af, hours, conf) as running:
        wait_until("hour 00 published",
                   lambda: run_states(af.home, af.dag_id).get(f"{DAY} 00:00:00.000000") == "success",
                   300, running, af)
        landed.touch()
        wait_until("train(01) has claimed the hour's staging",
                   lambda: claim_path(layout, hours[1]).exists(), 300, running, af)
        with open(layout.lock, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            wait_until("save_delta(01) waiting for the store lock",
                       lambda: task_state_map(af).get(("01", "save_delta")) == "running",
                       300, running, af)
            staged = sorted(layout.staging_dir(hours[1]).glob("shard-*.parquet"))[0]
            data = bytearray(staged.read_bytes())
            data[len(data) // 2] ^= 0xFF
            staged.write_bytes(bytes(data))
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

        states = wait_runs(running, af.dag_id, hours, timeout=400)  # 3 attempts (retry delay: conftest)
        assert states == {hours[0]: "success", hours[1]: "failed"}, task_state_map(af)
        tis = task_state_map(af)
        assert tis[("01", "train")] == "success" and tis[("01", "save_delta")] == "failed"
        assert [e["hour_str"] for e in ledger(af.model_dir)] == [f"{DAY}T00"]
        logs = sorted(af.home.glob("logs/dag_id=*/run_id=*T01:00:00*/task_id=save_delta/attempt=*.log"))
        assert len(logs) == 3, logs  # the retries met the same damaged file
        text = logs[-1].read_text(errors="replace")
        assert f"{staged.name} checksum" in text and "streamtrain: error:" in text, text[-3000:]

        # recovery: nothing to fix but the staging, which a retrain replaces; clear every task
        clear_and_rerun(af, running, hours, f"{DAY}T01", f"{DAY}T01")

    assert chain_events(af.model_dir) == [
        ("commit", "full", f"{DAY}T00", "v000001", None),
        ("commit", "delta", f"{DAY}T01", "v000002", "v000001")]
    assert len((af.model_dir / "donefile").read_text().splitlines()) == 2
    streamtrain("chain", "--config", str(af.config), "--verify")
