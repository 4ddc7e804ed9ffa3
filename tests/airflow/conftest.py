"""Fixtures for the Airflow tests: an isolated AIRFLOW_HOME per test, tiny model configs.

Every Airflow command runs in a subprocess with its own ``AIRFLOW_HOME`` (a copy of one migrated
SQLite DB, so ``airflow db migrate`` runs once per session). In-process imports of Airflow (the
DagBag test) use a throw-away home set here, before Airflow is first imported.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]

if "airflow" not in sys.modules:  # in-process Airflow must never touch ~/airflow
    _home = tempfile.mkdtemp(prefix="streamtrain-airflow-home-")
    os.environ["AIRFLOW_HOME"] = _home
    os.environ["AIRFLOW_CONFIG"] = os.path.join(_home, "airflow.cfg")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

# a tiny model: 1 server + 1 worker, small network, short sensor timeout
_EDITS = [
    (r'^name = "demo"', 'name = "{name}"'),
    (r"^data_root = .*", 'data_root = "{root}/data"'),
    (r"^model_dir = .*", 'model_dir = "{root}/model"'),
    (r"^workers = 2", "workers = 1"),
    (r"^hidden = \[64, 32\]", "hidden = [8]"),
    (r"^poke_seconds = 30", "poke_seconds = {poke}"),
    (r"^timeout_seconds = 7200", "timeout_seconds = {timeout}"),
]


def write_tiny_config(folder: Path, root: Path, name: str = "tiny", timeout: int = 4,
                      poke: int = 1) -> Path:
    text = (REPO / "examples" / "demo.toml").read_text()
    for pattern, repl in _EDITS:
        text, n = re.subn(pattern, repl.format(name=name, root=root, poke=poke, timeout=timeout),
                          text, flags=re.M)
        assert n == 1, f"examples/demo.toml changed: {pattern!r} matched {n} times"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def streamtrain(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or done.stdout
    return done


def ledger(model_dir: Path) -> list[dict]:
    import json

    path = model_dir / "ledger.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


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
