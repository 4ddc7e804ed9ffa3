"""The deferrable twin of ``wait_for_partition``, in-process: ``PartitionTrigger`` and the sensor's
``deferrable=True`` mode (no Airflow processes, no MPI)."""
from __future__ import annotations

import asyncio
import inspect
import time
from types import SimpleNamespace

import pendulum
import pytest

from tests.airflow.airflow_support import ledger, streamtrain, write_tiny_config
from trainer.hours import hour_index, partition_relpath

HOUR = hour_index("2026-01-01T00")


def _run(trigger, *, during=None):
    """The trigger's first event (as the triggerer / ``dags test`` take it), with an optional
    coroutine running beside it on the same event loop."""
    async def main():
        side = asyncio.create_task(during()) if during else None
        try:
            return await asyncio.wait_for(anext(trigger.run()), timeout=30)
        finally:
            if side:
                side.cancel()
    return asyncio.run(main())


def _trigger(root, **kw):
    from streamtrain_airflow.triggers import PartitionTrigger

    args = {"data_root": str(root), "hour": HOUR, "poke_interval": 0.05,
            "deadline": time.time() + 20, **kw}
    return PartitionTrigger(**args)


def test_serialize_mirrors_init_and_round_trips(tmp_path):
    from airflow.sdk._shared.module_loading import import_string
    from airflow.sdk.serde import deserialize, serialize

    from streamtrain_airflow.triggers import PartitionTrigger

    trigger = _trigger(tmp_path, deadline=1767225600.5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "streamtrain_airflow.triggers.PartitionTrigger"
    # every keyword of __init__, nothing else
    params = inspect.signature(PartitionTrigger.__init__).parameters
    assert set(kwargs) == {n for n in params if n != "self"}
    assert kwargs == {"data_root": str(tmp_path), "hour": HOUR, "poke_interval": 0.05,
                      "deadline": 1767225600.5, "config_path": ""}
    # the way the triggerer (and `dags test`) rebuild it: classpath + serde-encoded kwargs
    rebuilt = import_string(classpath)(**deserialize(serialize(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)


def test_fires_when_success_appears(tmp_path):
    part = tmp_path / partition_relpath(HOUR)

    async def land_later():
        await asyncio.sleep(0.3)
        part.mkdir(parents=True)
        (part / "_SUCCESS").touch()

    t0 = time.monotonic()
    event = _run(_trigger(tmp_path), during=land_later)
    assert event.payload["status"] == "landed"
    assert event.payload["hour"] == HOUR
    assert event.payload["partition"] == f"{tmp_path}/{partition_relpath(HOUR)}"
    assert event.payload["pokes"] >= 3  # polled before it landed
    assert time.monotonic() - t0 < 5


def test_yields_a_timeout_event_when_it_never_lands(tmp_path):
    t0 = time.monotonic()
    event = _run(_trigger(tmp_path, poke_interval=0.1, deadline=time.time() + 0.5))
    took = time.monotonic() - t0
    assert event.payload["status"] == "timeout"
    assert event.payload["pokes"] >= 3
    assert 0.4 <= took < 3, took  # stops at the deadline, not one poke interval later
    # the deadline is absolute: a trigger rebuilt after it has passed fires at once
    event = _run(_trigger(tmp_path, poke_interval=60, deadline=time.time() - 1))
    assert (event.payload["status"], event.payload["pokes"]) == ("timeout", 1)


def test_the_check_does_not_block_the_event_loop(tmp_path, monkeypatch):
    import trainer.partition

    def slow_is_complete(part):  # e.g. an object store answering slowly
        time.sleep(0.5)
        return False

    monkeypatch.setattr(trainer.partition, "is_complete", slow_is_complete)
    ticks = []

    async def ticker():
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.02)

    event = _run(_trigger(tmp_path, poke_interval=0.01, deadline=time.time() + 0.4), during=ticker)
    assert event.payload["status"] == "timeout"
    assert len(ticks) >= 10, ticks  # the loop kept running while the check slept in its thread


# -- the sensor's deferrable mode, called the way the task runner calls it ---------------------

@pytest.fixture
def af(tmp_path):
    """A tiny model config (no Airflow home needed: nothing here talks to a database)."""
    return SimpleNamespace(config=write_tiny_config(tmp_path / "configs", tmp_path),
                           data_root=tmp_path / "data", model_dir=tmp_path / "model")


def _context(**params):
    return {"logical_date": pendulum.datetime(2026, 1, 1, 0, tz="UTC"), "run_id": "manual__t",
            "params": params}


def _sensor(config, **kw):
    from streamtrain_airflow.sensors import PartitionSensor

    return PartitionSensor(task_id="wait_for_partition", config_path=str(config), **kw)


def test_deferrable_is_opt_in(af, monkeypatch):
    monkeypatch.delenv("AIRFLOW__STREAMTRAIN__SENSOR_DEFERRABLE", raising=False)
    assert _sensor(af.config).deferrable is False
    assert _sensor(af.config).mode == "poke"
    assert _sensor(af.config, deferrable=True).deferrable is True
    monkeypatch.setenv("AIRFLOW__STREAMTRAIN__SENSOR_DEFERRABLE", "True")
    assert _sensor(af.config).deferrable is True


def test_deferrable_sensor_defers_then_records_missing_or_checks_schema(af):
    from airflow.sdk.exceptions import AirflowSkipException, TaskDeferred

    sensor = _sensor(af.config, deferrable=True)
    t0 = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(_context(sensor_timeout_seconds=30, sensor_poke_seconds=2))
    d = deferred.value
    assert d.method_name == "execute_complete"
    classpath, kwargs = d.trigger.serialize()
    assert classpath == "streamtrain_airflow.triggers.PartitionTrigger"
    assert (kwargs["data_root"], kwargs["hour"], kwargs["poke_interval"]) == (
        str(af.data_root), HOUR, 2.0)
    assert t0 + 30 <= kwargs["deadline"] <= time.time() + 30
    # the scheduler's own deferral timeout is only a safety net behind the trigger's deadline
    assert d.timeout.total_seconds() > 30

    # the trigger timed out: recorded missing, skipped (a fresh operator, as after a deferral)
    event = {"status": "timeout", "hour": HOUR, "partition": "x", "pokes": 15, "waited_seconds": 30.0}
    with pytest.raises(AirflowSkipException, match="recorded as missing"):
        _sensor(af.config, deferrable=True).resume_execution(
            "execute_complete", {"event": event}, _context())
    [missing] = ledger(af.model_dir)
    assert (missing["event"], missing["hour_str"]) == ("missing", "2026-01-01T00")
    assert "after 30 s" in missing.get("reason", "")


def test_deferrable_sensor_landed_paths(af):
    streamtrain("gen-data", "--config", str(af.config), "--start", "2026-01-01T00", "--hours", "1",
                "--rows-per-hour", "200")
    # landed before the sensor starts: no deferral at all
    out = _sensor(af.config, deferrable=True).execute(_context(sensor_timeout_seconds=30))
    assert (out["status"], out["rows"]) == ("landed", 200)
    # the trigger fired "landed": the resumed task checks the footers
    event = {"status": "landed", "hour": HOUR, "partition": "x", "pokes": 2, "waited_seconds": 2.0}
    out = _sensor(af.config, deferrable=True).resume_execution(
        "execute_complete", {"event": event}, _context())
    assert (out["status"], out["rows"]) == ("landed", 200)
    # the scheduler's deferral timeout hit first (no triggerer): one last check decides
    out = _sensor(af.config, deferrable=True).resume_execution(
        "__fail__", {"error": "Trigger timeout"}, _context())
    assert out["status"] == "landed"
    assert ledger(af.model_dir) == []
