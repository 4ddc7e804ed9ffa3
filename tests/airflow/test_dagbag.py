"""The DAG file: imports cleanly, one DAG per config, the task graph and settings as specified."""
from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from tests.airflow.airflow_support import REPO, write_tiny_config


def _dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(REPO / "dags"))


def test_example_folder_gives_the_demo_and_custom_network_dags(monkeypatch):
    monkeypatch.delenv("STREAMTRAIN_CONFIG_DIR", raising=False)
    bag = _dagbag()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["streamtrain_custom", "streamtrain_demo"]


def test_one_dag_per_config_and_no_config_read_at_parse_time(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    write_tiny_config(folder, tmp_path / "a", name="alpha")
    write_tiny_config(folder, tmp_path / "b", name="beta")
    (folder / "broken.yaml").write_text(": this is not : valid [config\n")  # never parsed
    (folder / "_draft.toml").write_text("")  # ignored: leading underscore
    (folder / "notes.txt").write_text("")  # ignored: not a config suffix
    monkeypatch.setenv("STREAMTRAIN_CONFIG_DIR", str(folder))
    bag = _dagbag()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["streamtrain_alpha", "streamtrain_beta", "streamtrain_broken"]


def test_task_graph_and_scheduling_settings(tmp_path, monkeypatch):
    write_tiny_config(tmp_path / "configs", tmp_path)
    monkeypatch.setenv("STREAMTRAIN_CONFIG_DIR", str(tmp_path / "configs"))
    dag = _dagbag().dags["streamtrain_tiny"]
    down = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert down == {
        "wait_for_partition": ["train"],
        "train": ["choose_save"],
        "choose_save": ["save_delta", "save_full"],
        "save_full": ["publish"],
        "save_delta": ["publish"],
        "publish": [],
    }
    assert dag.catchup is True
    assert dag.max_active_runs == 1
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert dag.timetable.expression == "0 * * * *"
    assert dag.start_date.tzinfo is not None and dag.start_date.utcoffset() == dt.timedelta(0)
    tasks = {t.task_id: t for t in dag.tasks}
    for tid in ("train", "choose_save", "save_full", "save_delta"):
        assert tasks[tid].depends_on_past, tid
    assert tasks["wait_for_partition"].mode == "poke"  # reschedule races: apache/airflow#71172
    assert all(t.retries >= 1 and t.retry_exponential_backoff for t in dag.tasks)
    assert {t.retry_delay for t in dag.tasks} == {dt.timedelta(seconds=20)}  # production default
    monkeypatch.setenv("AIRFLOW__STREAMTRAIN__RETRY_DELAY_SECONDS", "1.5")  # what tests set
    assert {t.retry_delay for t in _dagbag().dags["streamtrain_tiny"].tasks} == {
        dt.timedelta(seconds=1.5)}
    assert tasks["train"].execution_timeout is not None
    assert tasks["publish"].trigger_rule == "none_failed_min_one_success"
    [asset] = tasks["publish"].outlets
    assert asset.uri == "streamtrain://tiny/model"


def test_a_run_trains_the_hour_of_its_logical_date(tmp_path, monkeypatch):
    """``@hourly`` is a CronTriggerTimetable: data_interval_start == end == logical date (3.3.2)."""
    from airflow.timetables.base import DataInterval, TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable

    from trainer.hours import hour_str

    from streamtrain_airflow.hours import data_hour

    write_tiny_config(tmp_path / "configs", tmp_path)
    monkeypatch.setenv("STREAMTRAIN_CONFIG_DIR", str(tmp_path / "configs"))
    dag = _dagbag().dags["streamtrain_tiny"]
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    core = CronTriggerTimetable("0 * * * *", timezone="UTC")
    t = pendulum.datetime(2026, 3, 1, 13, tz="UTC")
    info = core.next_dagrun_info(
        last_automated_data_interval=DataInterval(t.subtract(hours=1), t.subtract(hours=1)),
        restriction=TimeRestriction(earliest=None, latest=None, catchup=True))
    assert info.logical_date == t
    assert info.data_interval.start == info.data_interval.end == t
    assert info.run_after == t
    assert hour_str(data_hour(info.logical_date)) == "2026-03-01T13"


def test_backfill_backwards_is_refused_by_airflow(tmp_path, monkeypatch):
    """depends_on_past: Airflow refuses --run-backwards and the default reprocess behaviour."""
    from airflow.models.backfill import (
        InvalidBackfillDirection, InvalidReprocessBehavior, ReprocessBehavior,
        _validate_backfill_params,
    )

    write_tiny_config(tmp_path / "configs", tmp_path)
    monkeypatch.setenv("STREAMTRAIN_CONFIG_DIR", str(tmp_path / "configs"))
    dag = _dagbag().dags["streamtrain_tiny"]
    a, b = pendulum.datetime(2026, 1, 1, 0, tz="UTC"), pendulum.datetime(2026, 1, 1, 5, tz="UTC")
    with pytest.raises(InvalidBackfillDirection):
        _validate_backfill_params(dag, True, a, b, ReprocessBehavior.FAILED)
    with pytest.raises(InvalidReprocessBehavior):
        _validate_backfill_params(dag, False, a, b, ReprocessBehavior.NONE)
    _validate_backfill_params(dag, False, a, b, ReprocessBehavior.FAILED)  # the documented one
