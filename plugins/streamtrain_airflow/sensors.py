"""``wait_for_partition``: wait for an hour's ``_SUCCESS``, record a never-landing hour as missing.

After Airflow's own ``providers/standard`` file sensors: ``poke()`` makes one cheap check and logs
the path. Everything that needs the model config happens in ``execute()`` (the DAG file never reads
a config): it resolves the partition, takes the timeout and poke interval from the config (or from
the run's params), and after the marker has landed checks the Parquet footers (no data read).

Mode is ``poke`` on purpose: reschedule mode with a short poke interval can be marked failed by a
scheduler race (apache/airflow#71172), and the deferrable path ignored its timeout under
``airflow dags test``. A poking sensor holds one worker slot per model, which ``max_active_runs=1``
bounds anyway.
"""
from __future__ import annotations

import subprocess
import sys
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException

from trainer.hours import hour_str

from streamtrain_airflow.hours import data_hour


class PartitionSensor(BaseSensorOperator):
    """Wait for partition H (the run's data hour) to be complete, then check its schema.

    Parameters
    ----------
    config_path : str
        The model config file (read when the task runs, never at parse time).

    Returns (XCom) ``{"hour", "hour_str", "partition", "files", "rows", "status"}`` where status is
    ``"landed"`` or ``"already_committed"`` (the hour is in the chain: nothing to wait for).
    On timeout the hour is recorded as missing (``streamtrain mark-missing``) and the task is
    *skipped*, which skips train/save/publish of this run; later hours continue from the newest
    model.
    """

    template_fields = ("config_path",)
    ui_color = "#e8f4fd"

    def __init__(self, *, config_path: str, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "poke")
        super().__init__(**kwargs)
        self.config_path = config_path
        self._partition = None

    # -- one cheap check -----------------------------------------------------------------------
    def poke(self, context) -> bool:
        from trainer.partition import is_complete

        done = is_complete(self._partition)
        self.log.info("%s/_SUCCESS %s", self._partition.location, "found" if done else "not there yet")
        return done

    # -- the task ------------------------------------------------------------------------------
    def execute(self, context) -> dict:
        from trainer.config import load_config
        from trainer.partition import InputError, check_schema, list_files, locate

        from streamtrain_airflow.store_view import hour_status

        cfg = load_config(self.config_path)
        hour = data_hour(context["logical_date"])
        self._partition = part = locate(cfg.data_root, hour)
        out = {"hour": hour, "hour_str": hour_str(hour), "partition": part.location}
        self.log.info("run %s trains data hour %s (partition %s)",
                      context["run_id"], hour_str(hour), part.location)

        status = hour_status(cfg, hour)
        if status.state == "committed":
            self.log.info("hour %s is already in the chain as %s (%s): nothing to wait for",
                          hour_str(hour), status.version, status.kind)
            return {**out, "status": "already_committed"}

        params = context.get("params") or {}
        self.timeout = float(params.get("sensor_timeout_seconds") or cfg.sensor.timeout_seconds)
        self.poke_interval = float(params.get("sensor_poke_seconds") or cfg.sensor.poke_seconds)
        self.log.info("waiting up to %.0f s for %s/_SUCCESS (poke every %.0f s)",
                      self.timeout, part.location, self.poke_interval)
        try:
            super().execute(context)
        except AirflowSensorTimeout as err:
            reason = f"partition never landed: no {part.location}/_SUCCESS after {self.timeout:.0f} s"
            self._mark_missing(hour, reason)
            raise AirflowSkipException(f"hour {hour_str(hour)} recorded as missing: {reason}") from err

        try:
            files = list_files(part, checksums=False)
            if not files:
                raise InputError(f"partition {part.location} has _SUCCESS but no data files",
                                 file=part.location)
            files, _ = check_schema(part, files, cfg.columns)
        except InputError as err:  # retrying will not fix the data: fail now, loudly
            raise AirflowFailException(f"hour {hour_str(hour)}: {err}") from err
        rows = sum(f.rows for f in files)
        self.log.info("schema ok: %d file(s), %d rows in %s", len(files), rows, part.location)
        return {**out, "status": "landed", "files": len(files), "rows": rows}

    def _mark_missing(self, hour: int, reason: str) -> None:
        argv = [sys.executable, "-m", "trainer", "mark-missing", "--config", self.config_path,
                "--hour", hour_str(hour), "--reason", reason]
        self.log.warning("recording hour %s as missing: %s", hour_str(hour), " ".join(argv))
        done = subprocess.run(argv, capture_output=True, text=True)
        for line in (done.stdout + done.stderr).splitlines():
            self.log.info("%s", line)
        if done.returncode != 0:
            raise RuntimeError(f"streamtrain mark-missing exited {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")
