"""``wait_for_partition``: wait for an hour's ``_SUCCESS``, record a never-landing hour as missing.

After Airflow's own ``providers/standard`` file sensors: ``poke()`` makes one cheap check and logs
the path; the deferrable twin hands the same check to :class:`~streamtrain_airflow.triggers.PartitionTrigger`
(whose ``serialize()`` mirrors its ``__init__``). Everything that needs the model config happens in
``execute()`` (the DAG file never reads a config): it resolves the partition, takes the timeout and
poke interval from the config (or from the run's params), and after the marker has landed checks
the Parquet footers (no data read).

Mode is ``poke`` by default, on purpose:

* reschedule mode with a short poke interval can be marked failed by a scheduler race
  (apache/airflow#71172);
* deferrable mode needs a running ``airflow triggerer`` (a fourth process), and Airflow's own
  deferral timeout is enforced only by the scheduler: ``airflow dags test`` runs a trigger inline
  until its first event and never applies it (Airflow 3.3.2), so a sensor relying on it hung there.
  Our trigger therefore carries its own deadline and fires a ``"timeout"`` event, and the sensor
  records the hour missing and skips it, in ``dags test`` as under the scheduler.

A poking sensor holds one worker slot per model, which ``max_active_runs=1`` bounds anyway. Switch
to the deferrable twin (no slot held while waiting) with ``deferrable=True`` or, for every DAG,
``[streamtrain] sensor_deferrable = True`` in ``airflow.cfg`` (``AIRFLOW__STREAMTRAIN__SENSOR_DEFERRABLE``),
read in memory at parse time.
"""
from __future__ import annotations

import datetime as _dt
import subprocess
import sys
import time
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import (
    AirflowException, AirflowFailException, AirflowSensorTimeout, AirflowSkipException,
)

from trainer.hours import hour_start, hour_str

from streamtrain_airflow.hours import data_hour
from streamtrain_airflow.triggers import PartitionTrigger

#: Extra seconds on top of the sensor timeout before the scheduler fails a deferral whose trigger
#: never fired (triggerer down); the trigger's own deadline normally fires first.
DEFERRAL_GRACE_SECONDS = 120.0


def sensor_deadline(sensor_cfg, hour: int) -> float:
    """UNIX time after which waiting for hour ``hour`` is in vain: the hour's start + the
    producer's lag + the sensor timeout (``[sensor]`` of the config).

    >>> from trainer.config import SensorConfig
    >>> from trainer.hours import hour_index
    >>> sensor_deadline(SensorConfig(timeout_seconds=7200, producer_lag_seconds=3600),
    ...                 hour_index("2026-01-01T00"))  # 2026-01-01T03:00Z
    1767236400.0
    """
    return hour_start(hour).timestamp() + sensor_cfg.producer_lag_seconds + sensor_cfg.timeout_seconds


class PartitionSensor(BaseSensorOperator):
    """Wait for partition H (the run's data hour) to be complete, then check its schema.

    Parameters
    ----------
    config_path : str
        The model config file (read when the task runs, never at parse time).
    deferrable : bool or None
        Wait in the triggerer (:class:`~streamtrain_airflow.triggers.PartitionTrigger`) instead of
        poking in a worker slot. ``None`` (default) reads ``[streamtrain] sensor_deferrable``
        (default False: poke mode, see the module docstring).

    Returns (XCom) ``{"hour", "hour_str", "partition", "files", "rows", "status"}`` where status is
    ``"landed"`` (also with 0 rows: train records the hour empty), ``"already_committed"`` (the hour
    is in the chain) or ``"empty"`` (recorded empty): nothing to wait for.
    The wait ends at the sensor deadline at the latest (:func:`sensor_deadline`); a long-past hour
    (deadline gone) gets one check: landed, or recorded missing at once.
    On timeout the hour is recorded as missing (``streamtrain mark-missing``) and the task is
    *skipped*, which skips train/save/publish of this run; later hours continue from the newest
    model. Both modes behave the same; only where the waiting happens differs.
    """

    template_fields = ("config_path",)
    ui_color = "#e8f4fd"

    def __init__(self, *, config_path: str, deferrable: bool | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "poke")
        super().__init__(**kwargs)
        self.config_path = config_path
        if deferrable is None:
            deferrable = conf.getboolean("streamtrain", "sensor_deferrable", fallback=False)
        self.deferrable = bool(deferrable)
        self._partition = None

    # -- one cheap check -----------------------------------------------------------------------
    def poke(self, context) -> bool:
        from trainer.partition import is_complete

        done = is_complete(self._partition)
        self.log.info("%s/_SUCCESS %s", self._partition.location, "found" if done else "not there yet")
        return done

    # -- the task ------------------------------------------------------------------------------
    def _resolve(self, context):
        """The config, the run's data hour and its partition (every entry point starts here)."""
        from trainer.config import load_config
        from trainer.partition import locate

        cfg = load_config(self.config_path)
        hour = data_hour(context["logical_date"])
        self._partition = locate(cfg.data_root, hour, cfg.s3)
        return cfg, hour, self._partition

    def execute(self, context) -> dict:
        from streamtrain_airflow.store_view import hour_status

        cfg, hour, part = self._resolve(context)
        self.log.info("run %s trains data hour %s (partition %s)",
                      context["run_id"], hour_str(hour), part.location)

        status = hour_status(cfg, hour)
        if status.state in ("committed", "pruned"):
            self.log.info("hour %s is already in the chain as %s (%s): nothing to wait for",
                          hour_str(hour), status.version, status.kind)
            return {**self._out(hour, part), "status": "already_committed"}
        if status.state == "empty":
            self.log.info("hour %s is recorded empty (%s): nothing to wait for",
                          hour_str(hour), status.reason)
            return {**self._out(hour, part), "status": "empty"}

        self._timing(cfg, context, hour)
        if self.timeout <= 0:  # a long-past hour: nothing will land by waiting
            self.log.info("the sensor deadline of %s has passed (%s): one check decides",
                          hour_str(hour), self._deadline_rule(cfg, hour))
            if not self.poke(context):
                self._never_landed(hour, part, 0.0, why=f"the sensor deadline "
                                   f"({self._deadline_rule(cfg, hour)}) has passed")
            return self._landed(cfg, hour, part)
        self.log.info("waiting up to %.0f s for %s/_SUCCESS (poke every %.0f s, %s)",
                      self.timeout, part.location, self.poke_interval,
                      "deferrable: in the triggerer" if self.deferrable else "poke mode")
        if self.deferrable:
            if not self.poke(context):  # one check here: a landed hour needs no triggerer round trip
                trigger = PartitionTrigger(data_root=cfg.data_root, hour=hour,
                                           config_path=self.config_path,
                                           poke_interval=self.poke_interval,
                                           deadline=time.time() + self.timeout)
                self.defer(trigger=trigger, method_name="execute_complete",
                           timeout=_dt.timedelta(seconds=self.timeout + DEFERRAL_GRACE_SECONDS))
        else:
            try:
                super().execute(context)
            except AirflowSensorTimeout as err:
                self._never_landed(hour, part, self.timeout, err)
        return self._landed(cfg, hour, part)

    def execute_complete(self, context, event: dict | None = None) -> dict:
        """Resumed after :class:`PartitionTrigger` fired: ``landed`` or ``timeout``."""
        cfg, hour, part = self._resolve(context)
        event = event or {}
        self.log.info("trigger fired: %s", event)
        if event.get("status") == "timeout":
            self._never_landed(hour, part, float(event.get("waited_seconds") or 0))
        if event.get("status") != "landed":
            raise AirflowException(f"unexpected event from PartitionTrigger: {event!r}")
        return self._landed(cfg, hour, part)

    def resume_execution(self, next_method: str, next_kwargs: dict | None, context):
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowSensorTimeout as err:
            # The scheduler's deferral timeout (timeout + DEFERRAL_GRACE_SECONDS) hit before the
            # trigger fired, e.g. no triggerer was running. Decide with one last check.
            cfg, hour, part = self._resolve(context)
            self._timing(cfg, context, hour)
            self.log.warning("deferral timed out before the trigger fired (is `airflow triggerer` "
                             "running?): %s", err)
            if not self.poke(context):
                self._never_landed(hour, part, self.timeout, err)
            return self._landed(cfg, hour, part)

    def _timing(self, cfg, context, hour: int) -> None:
        """Timeout and poke interval: the run's params, else the config's ``[sensor]``.

        The config's timeout never reaches past the sensor deadline, hour start +
        ``producer_lag_seconds`` + ``timeout_seconds``: a run of an older hour gets 0 (one check).
        A run's own ``sensor_timeout_seconds`` is the operator's explicit choice and counts from
        now (e.g. to wait for an old hour that is being produced again).
        """
        params = context.get("params") or {}
        self.poke_interval = float(params.get("sensor_poke_seconds") or cfg.sensor.poke_seconds)
        if params.get("sensor_timeout_seconds"):
            self.timeout = float(params["sensor_timeout_seconds"])
            return
        left = sensor_deadline(cfg.sensor, hour) - time.time()
        self.timeout = max(0.0, min(cfg.sensor.timeout_seconds, left))

    @staticmethod
    def _deadline_rule(cfg, hour: int) -> str:
        deadline = _dt.datetime.fromtimestamp(sensor_deadline(cfg.sensor, hour), _dt.timezone.utc)
        return (f"{hour_str(hour)}:00 + producer lag {cfg.sensor.producer_lag_seconds:.0f} s + "
                f"timeout {cfg.sensor.timeout_seconds:.0f} s = {deadline:%Y-%m-%dT%H:%M:%SZ}")

    @staticmethod
    def _out(hour: int, part) -> dict:
        return {"hour": hour, "hour_str": hour_str(hour), "partition": part.location}

    def _never_landed(self, hour: int, part, waited: float, cause: BaseException | None = None,
                      why: str = ""):
        reason = (f"partition never landed: no {part.location}/_SUCCESS after {waited:.0f} s"
                  + (f" ({why})" if why else ""))
        self._mark_missing(hour, reason)
        raise AirflowSkipException(f"hour {hour_str(hour)} recorded as missing: {reason}") from cause

    def _landed(self, cfg, hour: int, part) -> dict:
        """``_SUCCESS`` is there: check the Parquet footers (no data read). A partition with no
        data files, or only 0-row ones, is landed too: the train task records it empty."""
        from trainer.partition import InputError, check_schema, list_files

        try:
            files = list_files(part, checksums=False)
            if files:
                files, _ = check_schema(part, files, cfg.columns)
        except InputError as err:  # retrying will not fix the data: fail now, loudly
            raise AirflowFailException(f"hour {hour_str(hour)}: {err}") from err
        rows = sum(f.rows for f in files)
        self.log.info("schema ok: %d file(s), %d rows in %s%s", len(files), rows, part.location,
                      "" if rows else " (an empty hour: train records it empty)")
        return {**self._out(hour, part), "status": "landed", "files": len(files), "rows": rows}

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
