"""Helpers of the Airflow tests (fixtures are in ``conftest.py``): tiny model configs and the
command line. Import as ``from airflow_support import ...``."""
from __future__ import annotations

import re
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from streamtrain_airflow.airflow_home import (COMPONENTS, airflow_env, run_states, start_airflow,
                                              stop_airflow, task_states, wait_http)
from streamtrain_airflow.demo import airflow_cli, prepare_backfill
from tests.support import REPO, streamtrain as run_streamtrain
from trainer.process import group_alive
from trainer.store import Ledger

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


#: ``[streamtrain] retry_delay_seconds`` of every test home (production: 20 s, doubling).
RETRY_DELAY_SECONDS = 2


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
    """Run the command line; it must succeed."""
    done = run_streamtrain(*args)
    assert done.returncode == 0, done.stderr or done.stdout
    return done


def ledger(model_dir: Path) -> list[dict]:
    """The model's ledger events, oldest first."""
    return Ledger(model_dir / "ledger.jsonl").read()


@contextmanager
def airflow_backfilling(af, hours: list[int], conf: dict, components=COMPONENTS):
    """Create the backfill of ``hours`` (Airflow stopped, as the demo does), start Airflow, wait
    for its API; yields the running processes and stops them on exit."""
    assert prepare_backfill(af.home, af.dag_id, hours[0], hours[-1], conf)
    running = start_airflow(af.home, af.port, components=components)
    try:
        wait_http(f"http://127.0.0.1:{af.port}/api/v2/monitor/health", 180, running)
        yield running
    finally:
        stop_airflow(running)


def task_state_map(af) -> dict[tuple[str, str], str]:
    """``{(HH of the run's hour, task_id): state}``."""
    out = {}
    for run_id, task, state in task_states(af.home, af.dag_id):
        out[(run_id.split("T")[-1][:2], task)] = state
    return out


def wait_until(what: str, cond, timeout: float, running, af) -> None:
    """Poll ``cond()`` every 2 s while Airflow runs; on timeout fail with the task states."""
    deadline = time.monotonic() + timeout
    while not cond():
        running.check_alive()
        assert time.monotonic() < deadline, \
            f"{what}: {task_state_map(af)} {run_states(af.home, af.dag_id)}"
        time.sleep(2)


def clear_and_rerun(af, running, hours: list[int], first: str, last: str) -> None:
    """"Recovering a failed hour", step 3: once the scheduler marked the backfill complete (an
    operator takes longer than its 30 s loop), clear every task of the runs ``first`` ..
    ``last`` (ISO hours, inclusive); then every run of ``hours`` must succeed."""
    from streamtrain_airflow.demo import airflow_cli, wait_backfills_complete, wait_runs

    wait_backfills_complete(running, af.dag_id, timeout=600)
    airflow_cli(af.home, "tasks", "clear", af.dag_id, "-s", f"{first}:00:00+00:00",
                "-e", f"{last}:00:00+00:00", "-y")
    states = wait_runs(running, af.dag_id, hours, timeout=300)
    assert states == {h: "success" for h in hours}, task_state_map(af)


def chain_events(model_dir: Path) -> list[tuple]:
    """``(event, kind, hour_str, version, parent)`` of every ledger line, oldest first."""
    return [(e["event"], e.get("kind"), e["hour_str"], e.get("version"), e.get("parent"))
            for e in ledger(model_dir)]


class SharedAirflow:
    """One running api-server + scheduler + dag-processor for the tests of a module, one DAG per
    model (``streamtrain_<name>``), each model with its own data and model folders."""

    def __init__(self, *, db: str, home: Path, port: int, root: Path, models: dict[str, Path]):
        self.db, self.home, self.port, self.root, self.models = db, home, port, root, models
        self.running = None

    def start(self) -> None:
        airflow_cli(self.home, "dags", "reserialize")  # every model's DAG, before any backfill
        self.running = start_airflow(self.home, self.port)
        wait_http(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", 300, self.running)

    def stop(self) -> None:
        if self.running is not None:
            stop_airflow(self.running)
            gone = [name for name, p in self.running.procs.items() if group_alive(p.pid)]
            assert gone == [], f"process groups left after stop: {gone}"

    def model(self, name: str) -> SimpleNamespace:
        """What a test of model ``name`` needs (the fields of the per-test ``af`` fixture)."""
        root = self.root / name
        return SimpleNamespace(home=self.home, env=airflow_env(self.home), config=self.models[name],
                               configs=self.models[name].parent, port=self.port, root=root,
                               model_dir=root / "model", data_root=root / "data",
                               dag_id=f"streamtrain_{name}", db=self.db)

    def backfill(self, af, hours: list[int], conf: dict | None) -> bool:
        """``airflow backfill create`` of ``af``'s DAG, then unpause it (REST). On SQLite the
        scheduler is stopped during the creation (next to a running one it can fail half-way);
        PostgreSQL takes it beside the running scheduler. (Every DAG was serialized at start.)"""
        from streamtrain_airflow.demo import backfill

        def create() -> bool:
            return backfill(self.home, af.dag_id, hours[0], hours[-1], conf, wait_for_dag=0)

        if self.db == "sqlite":
            from trainer.process import kill_group

            kill_group(self.running.procs["scheduler"], grace_seconds=15.0)
            try:
                created = create()
            finally:
                self.running.procs.update(start_airflow(self.home, self.port, ("scheduler",)).procs)
        else:
            created = create()
        status, body = api(af, "PATCH", f"/api/v2/dags/{af.dag_id}?update_mask=is_paused",
                           {"is_paused": False})
        assert status == 200, body
        return created


def api(af, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """Call the REST API as user admin (simple auth manager: password from the generated file);
    returns ``(status, JSON body)``, also for an error status."""
    import json
    import urllib.error
    import urllib.request

    from streamtrain_airflow.airflow_home import admin_password

    base = f"http://127.0.0.1:{af.port}"
    req = urllib.request.Request(f"{base}/auth/token", method="POST",
                                 data=json.dumps({"username": "admin",
                                                  "password": admin_password(af.home)}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        token = json.loads(resp.read())["access_token"]
    req = urllib.request.Request(f"{base}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
