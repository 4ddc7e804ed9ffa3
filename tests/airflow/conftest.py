"""Fixtures for the Airflow tests: an isolated AIRFLOW_HOME per test, tiny model configs, and one
running Airflow per test module and metadata database.

Every Airflow command runs in a subprocess with its own ``AIRFLOW_HOME`` (a copy of one migrated
SQLite DB, or a PostgreSQL database made from one migrated template, so ``airflow db migrate``
runs once per session and database). In-process imports of Airflow (the DagBag test) use a
throw-away home set here, before Airflow is first imported. Tasks retry after
``RETRY_DELAY_SECONDS`` (production: 20 s).
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

from tests.airflow.airflow_support import RETRY_DELAY_SECONDS, SharedAirflow, write_tiny_config

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
    write_config(home, port=port, config_dir=configs, retry_delay_seconds=RETRY_DELAY_SECONDS)
    shutil.copy(migrated_db, home / "airflow.db")
    return SimpleNamespace(home=home, env=airflow_env(home), config=config, configs=configs,
                           port=port, root=tmp_path, model_dir=tmp_path / "model",
                           data_root=tmp_path / "data", dag_id="streamtrain_tiny")



@pytest.fixture(scope="session")
def postgres():
    """The project's private PostgreSQL (``streamtrain_airflow.postgres``), one per session.

    Its folder is made outside pytest's tmp (mode 0700), which the ``postgres`` user the server
    runs as under root could not enter."""
    from streamtrain_airflow.airflow_home import free_port
    from streamtrain_airflow.postgres import PrivatePostgres

    root = Path(tempfile.mkdtemp(prefix="streamtrain-pg-"))
    root.chmod(0o755)
    server = PrivatePostgres(root / "pg")
    try:
        port = server.start(free_port(0))
        yield SimpleNamespace(server=server, port=port)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def migrated_postgres(postgres, tmp_path_factory) -> str:
    """The name of one migrated PostgreSQL database, the template of every test's database."""
    from streamtrain_airflow.airflow_home import airflow_bin, airflow_env, write_config

    name = "airflow_template"
    postgres.server.create_database(postgres.port, name)
    home = tmp_path_factory.mktemp("airflow-pg-template")
    write_config(home, port=8793, config_dir=home / "configs",
                 database_url=postgres.server.url(postgres.port, name))
    done = subprocess.run([airflow_bin(), "db", "migrate"], env=airflow_env(home),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return name


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def scheduler_airflow(request, tmp_path_factory, migrated_db):
    """api-server + scheduler + dag-processor shared by the tests of a module, on each metadata DB.

    The module lists its models in ``MODELS`` (one DAG each, configs written before Airflow
    starts); ``[streamtrain]`` start/end is ``WINDOW``. Yields a :class:`SharedAirflow`."""
    from streamtrain_airflow.airflow_home import free_port, write_config

    db = request.param
    root = tmp_path_factory.mktemp(f"scheduler-{db}")
    home, configs = root / "airflow", root / "configs"
    models = {name: write_tiny_config(configs, root / name, name=name)
              for name in request.module.MODELS}
    url = ""
    if db == "postgres":
        postgres = request.getfixturevalue("postgres")
        template = request.getfixturevalue("migrated_postgres")
        name = f"airflow_{request.module.__name__.rsplit('.', 1)[-1]}"
        postgres.server.create_database(postgres.port, name, template=template)
        url = postgres.server.url(postgres.port, name)
    port = free_port(0)
    first, last = request.module.WINDOW
    write_config(home, port=port, config_dir=configs, start=first, end=last, database_url=url,
                 retry_delay_seconds=RETRY_DELAY_SECONDS)
    if db == "sqlite":
        shutil.copy(migrated_db, home / "airflow.db")
    shared = SharedAirflow(db=db, home=home, port=port, root=root, models=models)
    shared.start()
    try:
        yield shared
    finally:
        shared.stop()
