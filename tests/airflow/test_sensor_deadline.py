"""Long-past hours: past its sensor deadline (hour + producer lag + timeout) a run's sensor makes
one check and trains the hour or records it missing at once (no Airflow processes, no MPI)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pendulum
import pytest

from tests.airflow.airflow_support import ledger, streamtrain, write_tiny_config
from trainer.hours import hour_index, hour_of_datetime, hour_start, hour_str

OLD = hour_index("2026-01-01T00")  # long past: its deadline was 2026-01-01T03:00Z


@pytest.fixture
def model(tmp_path):
    """A tiny model whose config keeps the production sensor settings (2 h timeout, 1 h lag)."""
    return SimpleNamespace(config=write_tiny_config(tmp_path / "configs", tmp_path, timeout=7200),
                           data_root=tmp_path / "data", model_dir=tmp_path / "model")


def _context(hour: int, **params):
    return {"logical_date": pendulum.instance(hour_start(hour)), "run_id": "backfill__t",
            "params": params}


def _sensor(model, **kw):
    from streamtrain_airflow.sensors import PartitionSensor

    return PartitionSensor(task_id="wait_for_partition", config_path=str(model.config), **kw)


def test_a_long_past_hour_without_success_is_recorded_missing_at_once(model):
    from airflow.sdk.exceptions import AirflowSkipException

    for deferrable in (False, True):  # poke mode would wait 7200 s; deferrable would defer
        hour = OLD + deferrable
        sensor = _sensor(model, deferrable=deferrable)
        with pytest.raises(AirflowSkipException, match="recorded as missing"):
            sensor.execute(_context(hour))
        assert sensor.timeout == 0
        missing = ledger(model.model_dir)[-1]
        assert (missing["event"], missing["hour_str"]) == ("missing", hour_str(hour))
        assert "the sensor deadline" in missing["reason"]
        assert f"= 2026-01-01T0{3 + deferrable}:00:00Z) has passed" in missing["reason"]


def test_a_long_past_hour_with_success_trains(model):
    streamtrain("gen-data", "--config", str(model.config), "--start", hour_str(OLD), "--hours", "1",
                "--rows-per-hour", "200")
    out = _sensor(model, deferrable=True).execute(_context(OLD))  # landed: no deferral
    assert (out["status"], out["rows"]) == ("landed", 200)
    assert ledger(model.model_dir) == []


def test_the_wait_never_reaches_past_the_deadline(model):
    from airflow.sdk.exceptions import TaskDeferred

    from streamtrain_airflow.sensors import sensor_deadline
    from trainer.config import load_config

    cfg = load_config(str(model.config))
    now_hour = hour_of_datetime(pendulum.now("UTC"))
    # the current hour: the whole timeout is left; two hours ago: only what is left until the deadline
    for hour, expected in ((now_hour, cfg.sensor.timeout_seconds),
                           (now_hour - 2, sensor_deadline(cfg.sensor, now_hour - 2) - time.time())):
        with pytest.raises(TaskDeferred) as deferred:
            _sensor(model, deferrable=True).execute(_context(hour))
        _, kwargs = deferred.value.trigger.serialize()
        assert abs(kwargs["deadline"] - time.time() - expected) < 30, (hour_str(hour), kwargs)
    assert 0 < sensor_deadline(cfg.sensor, now_hour - 2) - time.time() < cfg.sensor.timeout_seconds


def test_a_run_timeout_of_its_own_counts_from_now(model):
    """The run's ``sensor_timeout_seconds`` is an explicit choice: an old hour being produced
    again can still be waited for."""
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        _sensor(model, deferrable=True).execute(_context(OLD, sensor_timeout_seconds=300))
    _, kwargs = deferred.value.trigger.serialize()
    assert abs(kwargs["deadline"] - time.time() - 300) < 30
    assert ledger(model.model_dir) == []
