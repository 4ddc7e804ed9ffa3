"""The UI lists the models the DAG file declares: one config discovery (``dagconf``), honouring
``[streamtrain] config_dir`` in ``airflow.cfg`` as the DAG file does."""
from __future__ import annotations

import json
import subprocess
import sys

from streamtrain_airflow.airflow_home import airflow_env, write_config
from streamtrain_airflow.ui import data

# What the API server's process sees: Airflow's configuration read from AIRFLOW_CONFIG.
LIST_BOTH = """
import json
from streamtrain_airflow import dagconf
from streamtrain_airflow.ui import data
print(json.dumps({"dags": [dagconf.dag_id_for(p) for p in dagconf.config_files()],
                  "ui": [m.dag_id for m in data.discover_models()],
                  "ui_paths": [m.config_path for m in data.discover_models()]}))
"""


def _config(folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\nmodel_dir = "m/{name}"\ndata_root = "d"\n')
    return path


def test_ui_models_come_from_airflow_cfg_config_dir_like_the_dags(tmp_path):
    configs = tmp_path / "configs"
    wanted = [_config(configs, "alpha"), _config(configs, "beta")]
    (configs / "_draft.toml").write_text("ignored by the DAG file, so by the UI too")
    (configs / "notes.txt").write_text("not a config")
    _config(tmp_path / "elsewhere", "gamma")
    home = tmp_path / "home"
    write_config(home, port=8793, config_dir=configs)
    env = airflow_env(home)  # no STREAMTRAIN_CONFIG_DIR: airflow.cfg's setting rules
    done = subprocess.run([sys.executable, "-c", LIST_BOTH], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["dags"] == ["streamtrain_alpha", "streamtrain_beta"]
    assert seen["ui"] == seen["dags"]
    assert seen["ui_paths"] == [str(p) for p in wanted]


def test_the_environment_variable_wins_over_airflow_cfg(tmp_path, monkeypatch):
    _config(tmp_path / "env", "from_env")
    monkeypatch.setenv("STREAMTRAIN_CONFIG_DIR", str(tmp_path / "env"))
    assert [m.dag_id for m in data.discover_models()] == ["streamtrain_from_env"]


def test_an_absent_config_dir_lists_no_models(tmp_path):
    assert data.discover_models(tmp_path / "absent") == []
