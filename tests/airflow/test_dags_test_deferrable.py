"""``airflow dags test`` with the deferrable sensor (``[streamtrain] sensor_deferrable = True``).

``dags test`` runs a deferred task's trigger inline until its first event (no triggerer process)
and never applies Airflow's deferral timeout; ``PartitionTrigger``'s own deadline is what ends the
wait. Hour 0 lands while the trigger polls (full v1); hour 1 never lands (recorded missing, skipped,
not hung).
"""
from __future__ import annotations

import json
import time

import pytest

from tests.airflow.airflow_support import ledger, streamtrain
from streamtrain_airflow.airflow_home import airflow_bin
from trainer.hours import hour_index, partition_relpath
from trainer.process import kill_group, start_group

pytestmark = pytest.mark.slow

INLINE = "running trigger in line"  # what `dags test` logs when it runs a trigger (3.3.2)


def dags_test(af, logical: str, log, *, conf: dict | None = None, when_deferred=None,
              timeout: float = 240) -> str:
    env = {**af.env, "AIRFLOW__STREAMTRAIN__SENSOR_DEFERRABLE": "True"}
    argv = [airflow_bin(), "dags", "test", af.dag_id, logical]
    if conf:
        argv += ["--conf", json.dumps(conf)]
    with open(log, "wb") as out:
        proc = start_group(argv, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + timeout
        if when_deferred is not None:
            while INLINE not in log.read_text(errors="replace"):
                assert proc.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, "the sensor never deferred"
                time.sleep(0.5)
            when_deferred()
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        kill_group(proc, grace_seconds=5)
    out = log.read_text(errors="replace")
    assert proc.returncode == 0, out[-4000:]
    assert "DagRun Finished" in out and "state=success" in out, out[-4000:]
    return out


def test_deferrable_sensor_lands_then_times_out(af):
    streamtrain("gen-data", "--config", str(af.config), "--start", "2026-01-01T00", "--hours", "1",
                "--rows-per-hour", "1500")
    success = af.data_root / partition_relpath(hour_index("2026-01-01T00")) / "_SUCCESS"
    success.unlink()  # the data files are there, the marker lands once the trigger polls

    out = dags_test(af, "2026-01-01T00:00:00+00:00", af.root / "hour0.log",
                    conf={"sensor_timeout_seconds": 180, "sensor_poke_seconds": 1},
                    when_deferred=success.touch)
    assert "deferrable: in the triggerer" in out
    assert "trigger fired: {'status': 'landed'" in out, out[-4000:]
    assert "schema ok: 2 file(s), 1500 rows" in out
    [v1] = ledger(af.model_dir)
    assert (v1["event"], v1["kind"], v1["hour_str"], v1["version"]) == ("commit", "full", "2026-01-01T00", "v000001")

    # hour 1 never lands; a run timeout of its own (4 s) makes the long-past hour wait in the
    # trigger rather than being decided by one check (test_sensor_deadline.py)
    t0 = time.monotonic()
    out = dags_test(af, "2026-01-01T01:00:00+00:00", af.root / "hour1.log", timeout=120,
                    conf={"sensor_timeout_seconds": 4, "sensor_poke_seconds": 1})
    assert INLINE in out
    assert "trigger fired: {'status': 'timeout'" in out, out[-4000:]
    assert "recorded as missing" in out
    assert time.monotonic() - t0 < 120
    missing = ledger(af.model_dir)[-1]
    assert (missing["event"], missing["hour_str"]) == ("missing", "2026-01-01T01")
    assert len(ledger(af.model_dir)) == 2
