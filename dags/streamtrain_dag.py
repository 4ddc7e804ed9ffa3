"""streamtrain: one hourly training DAG per model config file.

Declares only (no config is read here; tasks load it when they run). For every config file in
``STREAMTRAIN_CONFIG_DIR`` (default ``<repo>/examples``) this file declares DAG
``streamtrain_<file stem>``:

    wait_for_partition >> train >> choose_save >> [save_full, save_delta] >> publish

The run with logical date ``T`` trains data hour ``T`` (partition ``dt=YYYY-MM-DD/hour=HH`` of T):
see ``docs/airflow.md``. Hours must train in order (the model after H is a function of the model
after H-1), hence ``catchup=True``, ``max_active_runs=1`` and ``depends_on_past=True`` on the
training tasks.
"""
from __future__ import annotations

from airflow.sdk import Param, TriggerRule, dag

from streamtrain_airflow.dagconf import (
    SAVE_TIMEOUT, TRAIN_TIMEOUT, config_files, dag_id_for, default_args, end_date, model_name,
    start_date,
)
from streamtrain_airflow.operators import (
    ChooseSaveOperator, PublishOperator, SaveOperator, TrainOperator, model_asset,
)
from streamtrain_airflow.sensors import PartitionSensor


def declare(config_path: str):
    name = model_name(config_path)

    @dag(
        dag_id=dag_id_for(config_path),
        description=f"hourly streaming training of model {name} ({config_path})",
        schedule="@hourly",
        start_date=start_date(),
        end_date=end_date(),
        catchup=True,
        max_active_runs=1,
        default_args=default_args(),
        params={
            # per-run overrides of the config's [sensor] section (None = use the config)
            "sensor_timeout_seconds": Param(None, type=["null", "number"], minimum=1),
            "sensor_poke_seconds": Param(None, type=["null", "number"], minimum=1),
        },
        tags=["streamtrain", f"model:{name}"],
        doc_md=__doc__,
    )
    def streamtrain_hourly():
        wait = PartitionSensor(task_id="wait_for_partition", config_path=config_path)
        train = TrainOperator(task_id="train", config_path=config_path, depends_on_past=True,
                              execution_timeout=TRAIN_TIMEOUT)
        choose = ChooseSaveOperator(task_id="choose_save", depends_on_past=True)
        save_full = SaveOperator(task_id="save_full", kind="full", config_path=config_path,
                                 depends_on_past=True, execution_timeout=SAVE_TIMEOUT)
        save_delta = SaveOperator(task_id="save_delta", kind="delta", config_path=config_path,
                                  depends_on_past=True, execution_timeout=SAVE_TIMEOUT)
        publish = PublishOperator(task_id="publish", config_path=config_path,
                                  asset=model_asset(name), execution_timeout=SAVE_TIMEOUT,
                                  trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)

        wait >> train >> choose >> [save_full, save_delta] >> publish

    return streamtrain_hourly()


for _config in config_files():
    globals()[dag_id_for(_config)] = declare(str(_config))
