"""Fixtures for the Airflow tests: an isolated AIRFLOW_HOME per test, tiny model configs.

Every Airflow command runs in a subprocess with its own ``AIRFLOW_HOME`` (a copy of one migrated
SQLite DB, so ``airflow db migrate`` runs once per session). In-process imports of Airflow (the
DagBag test) use a throw-away home set here, before Airflow is first imported.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.airflow.airflow_support import write_tiny_config

if "airflow" not in sys.modules:  # in-process Airflow must never touch ~/airflow
    _home = tempfile.mkdtemp(prefix="streamtrain-airflow-home-")
    os.environ["AIRFLOW_HOME"] = _home
    os.environ["AIRFLOW_CONFIG"] = os.path.join(_home, "airflow.cfg")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """One migrated SQLite metadata DB, copied into every test's home."""
    from streamtrain_airflow.airflow_home import airflow_bin, airflow_env, write_config

    home = tmp_path_factory.mktemp("airflow-template")
    write_config(home, port=8793, config_dir=home / "configs")
    done = subprocess.run([airflow_bin(), "db", "migrate"], env=airflow_env(home),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return home / "airflow.db"


@pytest.fixture
def af(tmp_path, migrated_db) -> SimpleNamespace:
    """An isolated Airflow home + a tiny model config (data and model under tmp_path)."""
    from streamtrain_airflow.airflow_home import airflow_env, free_port, write_config

    home = tmp_path / "airflow"
    configs = tmp_path / "configs"
    config = write_tiny_config(configs, tmp_path)
    port = free_port(0)
    write_config(home, port=port, config_dir=configs)
    shutil.copy(migrated_db, home / "airflow.db")
    return SimpleNamespace(home=home, env=airflow_env(home), config=config, configs=configs,
                           port=port, root=tmp_path, model_dir=tmp_path / "model",
                           data_root=tmp_path / "data", dag_id="streamtrain_tiny")

