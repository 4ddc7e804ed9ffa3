"""What the DAG file needs at parse time: the config files, the start/end dates, the defaults.

Parse-time rule: listing the file names of the config folder is the only I/O; no config is read
(tasks load their config when they run). Settings come from the environment or from the
``[streamtrain]`` section of ``airflow.cfg`` (``AIRFLOW__STREAMTRAIN__*``), both in memory already:

===========================  ==============================  =================================
setting                      environment / airflow.cfg        default
===========================  ==============================  =================================
config folder                ``STREAMTRAIN_CONFIG_DIR`` /     ``<repo>/examples``
                             ``[streamtrain] config_dir``
first scheduled hour         ``[streamtrain] start_date``     ``2026-01-01T00:00Z``
last scheduled hour          ``[streamtrain] end_date``       none (runs forever)
first retry delay (seconds)  ``[streamtrain]``                20 (then doubling, at most 10 min)
                             ``retry_delay_seconds``
===========================  ==============================  =================================

>>> dag_id_for("examples/demo.toml")
'streamtrain_demo'
"""
from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path

import pendulum

REPO = Path(__file__).resolve().parents[2]
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")
DEFAULT_START = "2026-01-01T00:00:00+00:00"


def _setting(key: str, env: str | None = None) -> str:
    if env and os.environ.get(env):
        return os.environ[env]
    from airflow.sdk.configuration import conf

    return conf.get("streamtrain", key, fallback="") or ""


def config_dir() -> Path:
    """The folder whose config files become DAGs."""
    return Path(_setting("config_dir", "STREAMTRAIN_CONFIG_DIR") or REPO / "examples")


def config_files(folder: Path | None = None) -> list[Path]:
    """Config files of ``folder`` (default :func:`config_dir`), sorted; names starting with ``.``
    or ``_`` are ignored. The DAG file and the UI both list models here."""
    folder = config_dir() if folder is None else Path(folder)
    try:
        return sorted(p for p in folder.iterdir() if p.suffix in CONFIG_SUFFIXES
                      and not p.name.startswith((".", "_")) and p.is_file())
    except OSError:  # absent or unreadable: no models
        return []


def model_name(config_path) -> str:
    """The model name a DAG uses at parse time: the config file's stem (must equal ``name``)."""
    return Path(config_path).stem


def dag_id_for(config_path) -> str:
    """``streamtrain_<file stem>``, with characters Airflow refuses replaced by ``_``."""
    return "streamtrain_" + re.sub(r"[^A-Za-z0-9_.-]", "_", model_name(config_path))


def _utc(text: str) -> pendulum.DateTime:
    d = pendulum.parse(text)
    if d.tzinfo is None:
        d = d.replace(tzinfo=pendulum.UTC)
    return d.in_timezone("UTC").replace(minute=0, second=0, microsecond=0)


def start_date() -> pendulum.DateTime:
    """First hour the scheduler creates runs for (catchup starts here)."""
    return _utc(_setting("start_date") or DEFAULT_START)


def end_date() -> pendulum.DateTime | None:
    """Last hour the scheduler creates runs for, or None."""
    text = _setting("end_date")
    return _utc(text) if text else None


#: The first retry delay when ``[streamtrain] retry_delay_seconds`` is not set.
RETRY_DELAY_SECONDS = 20.0


def default_args() -> dict:
    """Retries with backoff for every task: a cold api-server can time out the first call of a
    task (Execution API), a save can meet a busy filesystem. Train and save are safe to retry.
    The first delay is ``[streamtrain] retry_delay_seconds`` (tests set it low), then doubles."""
    delay = float(_setting("retry_delay_seconds") or RETRY_DELAY_SECONDS)
    return {
        "owner": "streamtrain",
        "retries": 2,
        "retry_delay": _dt.timedelta(seconds=delay),
        "retry_exponential_backoff": True,
        "max_retry_delay": _dt.timedelta(minutes=10),
    }

#: Upper bound of one hour's MPI job (on_kill terminates every rank when it is hit).
TRAIN_TIMEOUT = _dt.timedelta(hours=3)
SAVE_TIMEOUT = _dt.timedelta(minutes=30)
