"""`make ui` / `make ui-stop` as printed, from a clean environment (nothing activated)."""
from __future__ import annotations

import os
import subprocess
import time
import urllib.request

import pytest

from trainer.process import group_alive
from streamtrain_airflow.airflow_home import UI_PIDFILE, free_port, write_config
from streamtrain_airflow.dagconf import REPO

pytestmark = pytest.mark.slow

#: How long after `make ui` returns the UI must still answer.
UP_AFTER_SECONDS = 5
CLEAN_PATH = "/usr/bin:/bin"  # no venv bin: `airflow standalone` spawned from here failed


def _make(target: str, home, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(REPO), target, f"AIRFLOW_HOME_DIR={home}"],
                          env={"PATH": CLEAN_PATH, "HOME": os.environ.get("HOME", "/tmp")},
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_make_ui_answers_then_ui_stop_leaves_nothing(tmp_path):
    home = tmp_path / "airflow"
    port = free_port(0)
    write_config(home, port=port, config_dir=tmp_path / "configs")
    started = _make("ui", home, timeout=600)
    pgids = [int(x) for x in (home / UI_PIDFILE).read_text().split()] \
        if (home / UI_PIDFILE).exists() else []
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        assert f"127.0.0.1:{port}" in started.stdout
        time.sleep(UP_AFTER_SECONDS)  # still up once `make ui` has returned (not tied to it)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health",
                                    timeout=30) as resp:
            assert resp.status == 200
        assert len(pgids) == 3 and all(group_alive(g) for g in pgids)
    finally:
        stopped = _make("ui-stop", home, timeout=120)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert [g for g in pgids if group_alive(g)] == []
    assert not (home / UI_PIDFILE).exists()
