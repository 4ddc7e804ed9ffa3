"""``train`` → ``choose_save`` → ``save_full`` / ``save_delta`` → ``publish``.

After Airflow's ``providers/standard`` operators: ``__init__`` only stores keyword arguments;
``execute()`` loads the model config, asks the model store whether the hour is already done (then
every task is a logged no-op: clearing a finished run never trains twice), and otherwise runs the
one documented command for the step. The MPI job is built by ``trainer.launch.mpiexec_command`` and
runs in its own process group; ``on_kill()`` (also called by Airflow on ``execution_timeout``)
terminates the whole group, so no rank outlives its task.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from airflow.sdk import Asset, BaseBranchOperator, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from trainer.hours import hour_str

from streamtrain_airflow.hours import data_hour


def model_asset(name: str) -> Asset:
    """The Asset a new version of model ``name`` is published as: ``streamtrain://<name>/model``."""
    return Asset(uri=f"streamtrain://{name}/model", name=f"streamtrain_{name}_model",
                 group="streamtrain")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer", *args]


class _StreamtrainTask(BaseOperator):
    """Shared: the config path, the hour of the run, the command runner."""

    template_fields = ("config_path",)

    def __init__(self, *, config_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_path = config_path
        self._proc: subprocess.Popen | None = None

    def _setup(self, context):
        from trainer.config import load_config

        cfg = load_config(self.config_path)
        return cfg, data_hour(context["logical_date"])

    def _run(self, argv: list[str]) -> list[str]:
        from trainer.outcome import BAD_INPUT
        from trainer.process import CommandFailed, run_streaming

        self.log.info("running: %s", " ".join(argv))
        try:
            return run_streaming(argv, on_line=lambda ln: self.log.info("%s", ln),
                                 on_start=self._started)
        except CommandFailed as err:
            if err.returncode == BAD_INPUT:  # the data must be fixed first: no retries
                raise AirflowFailException(f"bad input data: {err}") from None
            raise AirflowException(str(err)) from None
        finally:
            self._proc = None

    def _started(self, proc: subprocess.Popen) -> None:
        self._proc = proc
        self.log.info("process group %d started", proc.pid)

    def on_kill(self) -> None:
        from trainer.process import kill_group

        proc = self._proc
        if proc is not None:
            self.log.warning("killing process group %d (every rank of the job)", proc.pid)
            kill_group(proc)


class TrainOperator(_StreamtrainTask):
    """Train the run's data hour: one ``mpiexec`` job that stages a new version.

    Returns (XCom) ``{"status", "hour", "hour_str", "kind", "version", "result"}``; status is
    ``"trained"`` (``kind`` = the staged kind, ``result`` = the job's result line),
    ``"already_committed"`` (``kind``/``version`` from the chain) or ``"empty"`` (the hour had no
    rows and is recorded empty: nothing to save or publish). Only the job's structured result
    line (``trainer.outcome``) is read, never its log text.
    """

    ui_color = "#fde8d7"

    def execute(self, context) -> dict:
        from trainer.launch import mpiexec_command
        from trainer.outcome import parse_result

        from streamtrain_airflow.store_view import hour_status, order_problem

        cfg, hour = self._setup(context)
        hs = hour_str(hour)
        status = hour_status(cfg, hour)
        if status.state in ("committed", "pruned"):
            self.log.info("hour %s is already in the chain as %s (%s): not training it again "
                          "(retrain the head on purpose with `streamtrain train --force`)",
                          hs, status.version, status.kind)
            return self._done(hour, "already_committed", status.kind, status.version)
        if status.state == "empty":
            self.log.info("hour %s is recorded empty (%s): nothing to train", hs, status.reason)
            return self._done(hour, "empty")
        others = [h for h in status.staged_hours if h != hs]
        if others:
            # Only possible when two runs of this DAG are active at once (a backfill's runs and the
            # scheduled runs have separate max_active_runs). Training now would build on a head
            # that is about to move. A retry (with backoff) picks this hour up once the save lands.
            raise AirflowException(
                f"hour(s) {', '.join(others)} are staged in {cfg.model_dir}/staging but not "
                f"committed yet: their save task must finish before {hs} trains "
                f"(if that run was abandoned, clear its save task or delete the staging folder)")

        problem = order_problem(cfg, hour)
        if problem:  # a person must settle the earlier hour: retrying cannot help
            raise AirflowFailException(problem)
        run_info = {"airflow": {"dag_id": context["dag"].dag_id, "run_id": context["run_id"]}}
        result = parse_result(self._run(mpiexec_command(cfg, hour, run_info=run_info)))
        if result is None:
            raise AirflowException(f"the job for {hs} exited 0 without a result line")
        if result["status"] == "empty":
            self.log.info("hour %s recorded empty by the job: %s", hs, result.get("reason"))
            return self._done(hour, "empty", result=result)
        if result["status"] == "skipped":
            status = hour_status(cfg, hour)
            return self._done(hour, "already_committed", status.kind, status.version, result)
        kind = result.get("kind")
        if kind not in ("full", "delta"):
            raise AirflowException(f"the job for {hs} staged an unknown kind {kind!r}")
        self.log.info("staged %s version of %s: %s", kind, hs, json.dumps(result))
        return self._done(hour, "trained", kind, result.get("version"), result)

    @staticmethod
    def _done(hour: int, status: str, kind: str | None = None, version: str | None = None,
              result: dict | None = None) -> dict:
        return {"status": status, "hour": hour, "hour_str": hour_str(hour), "kind": kind,
                "version": version, "result": result}


class ChooseSaveOperator(BaseBranchOperator):
    """Follow ``save_full`` or ``save_delta`` according to the kind ``train`` staged; neither for
    an empty hour."""

    ui_color = "#f0e8fd"

    def __init__(self, *, train_task_id: str = "train", full_task_id: str = "save_full",
                 delta_task_id: str = "save_delta", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_task_id = train_task_id
        self.full_task_id = full_task_id
        self.delta_task_id = delta_task_id

    def choose_branch(self, context) -> str | list[str]:
        staged = context["ti"].xcom_pull(task_ids=self.train_task_id) or {}
        if staged.get("status") == "empty":
            self.log.info("%s is recorded empty: no version to save or publish",
                          staged.get("hour_str"))
            return []  # both saves and publish are skipped; the run succeeds
        kind = staged.get("kind")
        if kind not in ("full", "delta"):
            raise AirflowException(f"{self.train_task_id} returned no save kind: {staged!r}")
        self.log.info("%s: %s version (%s)", staged.get("hour_str"), kind, staged.get("status"))
        return self.full_task_id if kind == "full" else self.delta_task_id


class SaveOperator(_StreamtrainTask):
    """Commit the staged version of the run's hour (``streamtrain save --kind full|delta``).

    A no-op when the hour is already committed (a retry after a save whose commit landed, or a
    cleared finished run).
    """

    ui_color = "#e3f7e3"

    def __init__(self, *, kind: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind

    def execute(self, context) -> dict:
        from streamtrain_airflow.store_view import hour_status

        if self.kind not in ("full", "delta"):
            raise AirflowException(f"kind must be 'full' or 'delta', got {self.kind!r}")
        cfg, hour = self._setup(context)
        hs = hour_str(hour)
        status = hour_status(cfg, hour)
        if status.state not in ("committed", "pruned"):
            self._run(_cli("save", "--config", self.config_path, "--hour", hs, "--kind", self.kind))
            status = hour_status(cfg, hour)
            if status.state != "committed":
                raise AirflowException(f"streamtrain save exited 0 but {hs} is not in the chain")
        else:
            self.log.info("hour %s is already committed as %s (%s): nothing to save",
                          hs, status.version, status.kind)
        return {"hour": hour, "hour_str": hs, "version": status.version, "kind": status.kind}


class PublishOperator(_StreamtrainTask):
    """Append the hour's version to the donefile, emit the model Asset event, push the metrics.

    The Asset event's ``extra`` carries ``version``, ``kind``, ``hour`` and the metrics, so a
    downstream DAG scheduled on ``streamtrain://<name>/model`` knows which version to load. An
    already published version is not published again (the task is skipped: no second event).
    """

    ui_color = "#fff7d6"

    def __init__(self, *, asset: Asset, **kwargs: Any) -> None:
        kwargs.setdefault("outlets", [asset])
        super().__init__(**kwargs)
        self.asset = asset

    def execute(self, context) -> dict:
        from streamtrain_airflow.store_view import hour_status, published_versions, version_meta

        cfg, hour = self._setup(context)
        hs = hour_str(hour)
        status = hour_status(cfg, hour)
        if status.state == "pruned":
            raise AirflowSkipException(f"{status.version} ({hs}) was pruned: nothing to publish")
        if status.state != "committed":
            raise AirflowException(f"hour {hs} is not committed ({status.state}): nothing to publish")
        meta = version_meta(cfg, status.version)
        metrics = meta.get("metrics", {})
        out = {"version": status.version, "kind": status.kind, "hour": hour, "hour_str": hs,
               "path": str(cfg.model_dir) + "/versions/" + status.version, "metrics": metrics}
        context["ti"].xcom_push(key="metrics", value=metrics)
        if status.version in published_versions(cfg):
            self.log.info("%s (%s) is already in the donefile: not publishing it again",
                          status.version, hs)
            raise AirflowSkipException(f"{status.version} already published")
        self._run(_cli("publish", "--config", self.config_path, "--hour", hs))
        context["outlet_events"][self.asset].extra = {
            "version": status.version, "kind": status.kind, "hour": hour, "hour_str": hs,
            "model_dir": str(cfg.model_dir), "metrics": _jsonable(metrics)}
        self.log.info("published %s (%s, %s): %s", status.version, status.kind, hs, json.dumps(metrics))
        return out


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))
