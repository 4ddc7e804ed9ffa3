"""A project-local Airflow for small machines: ``airflow.cfg``, processes, run states.

Airflow 3 needs three long-lived processes for the real scheduler path: the api-server (UI and the
Execution API every task talks to), the scheduler (with LocalExecutor) and the dag-processor (DAG
parsing is no longer done by the scheduler). :func:`start_airflow` starts each in its own process
group; :func:`stop_airflow` stops each group (children of an Airflow process otherwise keep the
port and the SQLite file).

Settings chosen for a 2-core machine (see docs/airflow.md, all verified on Airflow 3.3.2):

* ``[core] parallelism = 4``: LocalExecutor forks ``parallelism`` workers (32 by default).
* ``[workers] execution_api_timeout = 60``: the first task on a cold, loaded api-server timed out
  at the default 5 s.
* ``[api] workers = 1``, ``[dag_processor] parsing_processes = 1``: fewer idle processes.
* a fixed ``[api_auth] jwt_secret``: the api-server and the scheduler's workers must share it.
* ``[core] dags_are_paused_at_creation = True``: a new DAG never starts catching up on its own.
"""
from __future__ import annotations

import configparser
import datetime as _dt
import os
import secrets
import socket
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from streamtrain_airflow.dagconf import REPO
from trainer.process import kill_group, start_group

COMPONENTS = ("api-server", "scheduler", "dag-processor")


def airflow_bin() -> str:
    """The ``airflow`` script beside this Python (the venv's)."""
    beside = Path(sys.executable).parent / "airflow"
    return str(beside) if beside.exists() else "airflow"


def free_port(preferred: int = 8080, host: str = "127.0.0.1") -> int:
    """``preferred`` if nothing listens there, else a free ephemeral port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port")


def write_config(home: Path, *, port: int, config_dir: Path, start: str = "", end: str = "",
                 parallelism: int = 4, database_url: str = "", postgres_root: Path | None = None,
                 retry_delay_seconds: float | None = None) -> Path:
    """Write ``<home>/airflow.cfg`` (keeps an existing jwt secret). Returns its path.

    ``database_url`` is the metadata database (default: SQLite ``<home>/airflow.db``);
    ``postgres_root`` names the project's private PostgreSQL serving it (``make ui`` starts it
    and ``make ui-stop`` stops it); ``retry_delay_seconds`` sets ``[streamtrain]
    retry_delay_seconds``, the first retry delay of every task (tests set it low).
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / "airflow.cfg"
    old = configparser.ConfigParser(interpolation=None)
    if path.exists():
        old.read(path)
    if retry_delay_seconds is None:  # kept, as the secrets are, when not given
        retry_delay_seconds = old.get("streamtrain", "retry_delay_seconds", fallback=None)
    secret = old.get("api_auth", "jwt_secret", fallback="") or secrets.token_urlsafe(32)
    api_secret = old.get("api", "secret_key", fallback="") or secrets.token_urlsafe(32)
    cfg = {
        "core": {
            "dags_folder": str(REPO / "dags"),
            "plugins_folder": str(REPO / "plugins"),
            "executor": "LocalExecutor",
            "parallelism": str(parallelism),
            "max_active_tasks_per_dag": str(parallelism),
            "load_examples": "False",
            "dags_are_paused_at_creation": "True",
            "execution_api_server_url": f"http://127.0.0.1:{port}/execution/",
            "simple_auth_manager_users": "admin:admin",
        },
        "database": {"sql_alchemy_conn": database_url or f"sqlite:///{home / 'airflow.db'}"},
        "logging": {"base_log_folder": str(home / "logs")},
        "api": {"host": "127.0.0.1", "port": str(port), "workers": "1",
                "base_url": f"http://127.0.0.1:{port}", "secret_key": api_secret},
        "api_auth": {"jwt_secret": secret},
        "workers": {"execution_api_timeout": "60"},
        "dag_processor": {"parsing_processes": "1", "refresh_interval": "30"},
        "streamtrain": {"config_dir": str(config_dir), "start_date": start, "end_date": end},
    }
    if postgres_root is not None:
        cfg["streamtrain"]["postgres_root"] = str(postgres_root)
    if retry_delay_seconds is not None:
        cfg["streamtrain"]["retry_delay_seconds"] = str(retry_delay_seconds)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(cfg)
    with open(path, "w") as f:
        f.write("# written by streamtrain (streamtrain_airflow/airflow_home.py); edits are overwritten\n")
        parser.write(f)
    return path


def airflow_env(home: Path) -> dict:
    """Environment for Airflow commands of this home (AIRFLOW__* overrides from outside removed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW_CONFIG=str(home / "airflow.cfg"),
               PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    env.pop("STREAMTRAIN_CONFIG_DIR", None)  # airflow.cfg's [streamtrain] config_dir rules
    return env


@dataclass
class AirflowProcesses:
    home: Path
    port: int
    procs: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with code {proc.returncode}; see "
                                   f"{self.home / 'logs' / (name + '.out')}")


def start_airflow(home: Path, port: int, components=COMPONENTS, *,
                  outlive_caller: bool = False) -> AirflowProcesses:
    """Start each component in its own process group, output to ``<home>/logs/<name>.out``.

    The components die with the calling process unless `outlive_caller` (the UI kept up)."""
    env = airflow_env(home)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    running = AirflowProcesses(home, port)
    try:
        for name in components:
            out = open(home / "logs" / f"{name}.out", "ab")
            argv = [airflow_bin(), name] + (["--port", str(port), "--host", "127.0.0.1"]
                                             if name == "api-server" else [])
            running.procs[name] = start_group(argv, env=env, stdout=out, stderr=out,
                                              outlive_caller=outlive_caller)
            out.close()
    except BaseException:
        stop_airflow(running)
        raise
    return running


def stop_airflow(running: AirflowProcesses) -> None:
    """Stop every component's whole process group (SIGTERM, then SIGKILL)."""
    for proc in running.procs.values():
        kill_group(proc, grace_seconds=15.0)


def wait_http(url: str, timeout: float, running: AirflowProcesses | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status < 500:
                    return
        except OSError:
            pass
        if running is not None:
            running.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(1.0)


def read_config(home: Path) -> configparser.ConfigParser:
    """The home's ``airflow.cfg``."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(home / "airflow.cfg")
    return cfg


def database_url(home: Path) -> str:
    """The home's metadata database (``[database] sql_alchemy_conn``)."""
    return read_config(home).get("database", "sql_alchemy_conn",
                                 fallback=f"sqlite:///{home / 'airflow.db'}")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def query_rows(home: Path, sql: str, **params) -> list[tuple]:
    """Rows of one read-only query on the home's metadata DB ([] while it has no such table)."""
    import sqlalchemy

    url = database_url(home)
    if is_sqlite(url):
        db = Path(url.split(":///", 1)[1])
        if not db.exists():
            return []
        url = f"sqlite:///file:{db}?mode=ro&uri=true"
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                      connect_args={"timeout": 30} if is_sqlite(url) else {})
    try:
        with engine.connect() as con:
            return [tuple(r) for r in con.execute(sqlalchemy.text(sql), params)]
    except sqlalchemy.exc.ProgrammingError:
        return []  # not migrated yet
    except sqlalchemy.exc.OperationalError as err:
        if "no such table" in str(err):
            return []
        raise
    finally:
        engine.dispose()


def _date_key(value) -> str:
    """A logical date as SQLite stores it (``2026-01-01 00:00:00.000000``), from either DB."""
    if hasattr(value, "strftime"):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return str(value)


def run_states(home: Path, dag_id: str) -> dict[str, str]:
    """``{logical date (``YYYY-MM-DD HH:MM:SS.ffffff`` UTC): state}`` of a DAG's runs."""
    rows = query_rows(home, "SELECT logical_date, state FROM dag_run WHERE dag_id = :d", d=dag_id)
    return {_date_key(d): s for d, s in rows}


def active_backfills(home: Path, dag_id: str) -> int:
    """Number of backfills of ``dag_id`` not marked complete yet."""
    rows = query_rows(home, "SELECT count(*) FROM backfill WHERE dag_id = :d AND completed_at IS NULL",
                 d=dag_id)
    return rows[0][0] if rows else 0


def task_states(home: Path, dag_id: str) -> list[tuple[str, str, str]]:
    """``(run_id, task_id, state)`` of a DAG's task instances (for failure reports)."""
    return query_rows(home, "SELECT run_id, task_id, state FROM task_instance WHERE dag_id = :d"
                       " ORDER BY run_id, task_id", d=dag_id)


def admin_password(home: Path) -> str | None:
    """The generated password of user ``admin`` (simple auth manager), once the api-server wrote it."""
    import json

    path = home / "simple_auth_manager_passwords.json.generated"
    try:
        return json.loads(path.read_text()).get("admin")
    except (OSError, ValueError):
        return None


UI_PIDFILE = "ui.pgids"


def start_ui(home: Path, port: int = 8080, config_dir: Path = REPO / "examples",
             timeout: float = 300.0) -> AirflowProcesses:
    """Keep the UI of ``home`` up: migrate, start the three components, record their groups.

    Writes ``airflow.cfg`` when ``home`` has none (an existing one, e.g. the demo's, is kept) and
    ``<home>/ui.pgids`` (one process group per line) for :func:`stop_ui`. Refuses a home whose
    recorded groups are still alive.
    """
    if _live_groups(home):
        raise RuntimeError(f"the UI of {home} is already running (process groups in "
                           f"{home / UI_PIDFILE}); stop it with `make ui-stop`")
    if not (home / "airflow.cfg").exists():
        write_config(home, port=free_port(port), config_dir=config_dir)
    start_database(home)
    port = read_config(home).getint("api", "port")
    import subprocess

    done = subprocess.run([airflow_bin(), "db", "migrate"], env=airflow_env(home),
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate exited {done.returncode}:\n{done.stderr[-3000:]}")
    running = start_airflow(home, port, outlive_caller=True)  # up after `make ui` returns
    (home / UI_PIDFILE).write_text("".join(f"{p.pid}\n" for p in running.procs.values()))
    try:
        wait_http(f"{running.url}/api/v2/monitor/health", timeout, running)
    except BaseException:
        stop_ui(home)
        raise
    return running


def _live_groups(home: Path) -> list[int]:
    try:
        pgids = [int(line) for line in (home / UI_PIDFILE).read_text().split()]
    except (OSError, ValueError):
        return []
    alive = []
    for pgid in pgids:
        try:
            os.killpg(pgid, 0)
            alive.append(pgid)
        except ProcessLookupError:
            pass
    return alive


def stop_ui(home: Path, grace_seconds: float = 15.0) -> int:
    """Stop the process groups :func:`start_ui` recorded (SIGTERM, then SIGKILL). Returns how many."""
    import signal

    pgids = _live_groups(home)
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
        for pgid in _live_groups(home):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while _live_groups(home) and time.monotonic() < deadline:
            time.sleep(0.2)
    (home / UI_PIDFILE).unlink(missing_ok=True)
    stopped = stop_database(home)
    if stopped:
        print(f"[ui] stopped {stopped}", flush=True)
    return len(pgids)


def _private_postgres(home: Path):
    root = read_config(home).get("streamtrain", "postgres_root", fallback="")
    if not root:
        return None
    from streamtrain_airflow.postgres import PrivatePostgres

    return PrivatePostgres(Path(root))


def start_database(home: Path) -> None:
    """Start the home's private PostgreSQL, if it has one, and point ``airflow.cfg`` at the port
    it listens on (a free one at each start). SQLite needs nothing."""
    pg = _private_postgres(home)
    if pg is None:
        return
    import urllib.parse

    cfg = read_config(home)
    old = cfg.get("database", "sql_alchemy_conn")
    port = pg.start(urllib.parse.urlsplit(old).port or 5432)
    cfg.set("database", "sql_alchemy_conn", pg.url(port))
    with open(home / "airflow.cfg", "w") as f:
        cfg.write(f)


def stop_database(home: Path) -> str:
    """Stop the home's private PostgreSQL, if it has one and it runs: what was stopped, or ""."""
    pg = _private_postgres(home)
    return f"PostgreSQL of {pg.root}" if pg is not None and pg.stop() else ""


def main(argv: list[str] | None = None) -> int:
    """``python -m streamtrain_airflow.airflow_home ui|ui-stop [--home H] [--port P]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m streamtrain_airflow.airflow_home")
    p.add_argument("action", choices=["ui", "ui-stop"])
    p.add_argument("--home", default=str(REPO / "var" / "airflow"), help="AIRFLOW_HOME")
    p.add_argument("--port", type=int, default=8080, help="used when the home has no airflow.cfg")
    args = p.parse_args(argv)
    home = Path(args.home).resolve()
    if args.action == "ui-stop":
        print(f"[ui] stopped {stop_ui(home)} process groups of {home}")
        return 0
    running = start_ui(home, args.port)
    print(f"[ui] {running.url} (127.0.0.1 only; user admin, password {admin_password(home) or '?'});"
          f" process groups {' '.join(str(p.pid) for p in running.procs.values())}; "
          f"stop with `make ui-stop`", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
