"""``streamtrain demo``: the main job on Airflow's embedded default.

1. a synthetic stream of hourly partitions (``streamtrain gen-data``; one hour deliberately never
   lands), 2. a project-local Airflow (``<repo>/var/airflow``: SQLite, LocalExecutor, DAGs and
plugins folders in the repo), 3. api-server + scheduler + dag-processor, each in its own process
group, 4. ``airflow backfill create --reprocess-behavior failed --max-active-runs 1`` over the
hours, trained in order by the real scheduler, 5. a per-hour table read from the model store.

A second invocation reuses the data, the Airflow DB and the chain (finished hours are not
re-run). ``--keep-running`` leaves the processes up for the UI.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from streamtrain_airflow.dagconf import REPO, dag_id_for
from trainer.hours import hour_index, hour_start, hour_str

DEMO_START = "2026-01-01T00"  # a fixed past hour at full_save_hour 0: full base, then deltas
DEMO_HOURS = 6
DEMO_ROWS = 20000
#: the demo's sensor settings (per-run params; the config's 2 h timeout is for production)
DEMO_SENSOR = {"sensor_timeout_seconds": 45, "sensor_poke_seconds": 5}


def _iso(hour: int) -> str:
    return hour_start(hour).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _streamtrain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True)


def ensure_data(config: str, cfg, start: int, hours: int, skip: list[int], rows: int) -> None:
    """Generate the stream unless every present hour already has its ``_SUCCESS``."""
    from trainer.partition import is_complete, locate

    present = [h for h in range(start, start + hours) if h not in skip]
    if all(is_complete(locate(cfg.data_root, h)) for h in present):
        _say(f"data: reusing {len(present)} partitions under {cfg.data_root}")
        return
    _say(f"data: generating {hours} hours from {hour_str(start)} under {cfg.data_root} "
         f"(hour {', '.join(hour_str(h) for h in skip)} left missing)")
    args = ["gen-data", "--config", config, "--start", hour_str(start), "--hours", str(hours),
            "--rows-per-hour", str(rows)]
    if skip:
        args += ["--skip", *[hour_str(h) for h in skip]]
    done = _streamtrain(*args)
    if done.returncode != 0:
        raise RuntimeError(f"streamtrain gen-data failed: {(done.stderr or done.stdout).strip()}")


def airflow_cli(home: Path, *args: str, check: bool = True, timeout: float = 300
                ) -> subprocess.CompletedProcess:
    from streamtrain_airflow.airflow_home import airflow_bin, airflow_env

    done = subprocess.run([airflow_bin(), *args], env=airflow_env(home), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} exited {done.returncode}:\n"
                           f"{(done.stderr or done.stdout).strip()[-3000:]}")
    return done


def backfill(home: Path, dag_id: str, first: int, last: int, conf: dict | None,
             wait_for_dag: float = 240.0) -> bool:
    """Create the backfill (retrying until the dag-processor has parsed the DAG).

    Returns False when there is nothing to create (every hour already ran successfully).
    """
    args = ["backfill", "create", "--dag-id", dag_id, "--from-date", _iso(first),
            "--to-date", _iso(last), "--reprocess-behavior", "failed", "--max-active-runs", "1"]
    if conf:
        args += ["--dag-run-conf", json.dumps(conf)]
    deadline = time.monotonic() + wait_for_dag
    while True:
        done = airflow_cli(home, *args, check=False)
        text = done.stdout + done.stderr
        if done.returncode == 0 and "No runs to create" not in text:
            return True
        if "No runs to create" in text or "NoBackfillRunsToCreate" in text:
            return False
        if "AlreadyRunningBackfill" in text or "Another backfill is running" in text:
            raise RuntimeError(
                f"a backfill of {dag_id} is still active (an interrupted earlier run?). With "
                f"depends_on_past its runs may be blocked behind a failed hour: follow "
                f"'Recovering a failed hour' in docs/airflow.md, or start from scratch by "
                f"removing the demo's AIRFLOW_HOME and model_dir")
        if ("Could not find dag" not in text and "DagNotFound" not in text) \
                or time.monotonic() > deadline:
            raise RuntimeError(f"airflow backfill create failed:\n{text.strip()[-3000:]}")
        time.sleep(3)


def prepare_backfill(home: Path, dag_id: str, first: int, last: int, conf: dict | None) -> bool:
    """With Airflow stopped: serialize the DAGs, create the backfill, unpause the DAG."""
    airflow_cli(home, "dags", "reserialize")
    created = backfill(home, dag_id, first, last, conf, wait_for_dag=0)
    airflow_cli(home, "dags", "unpause", dag_id)
    return created


def wait_runs(running, dag_id: str, hours: list[int], timeout: float) -> dict[int, str]:
    """Wait until the runs of ``hours`` are all success/failed; return ``{hour: state}``."""
    from streamtrain_airflow.airflow_home import run_states

    deadline = time.monotonic() + timeout
    last = None
    while True:
        running.check_alive()
        raw = run_states(running.home, dag_id)
        states = {}
        for ld, st in raw.items():
            h = hour_index(ld.replace(" ", "T")[:13])
            states[h] = st
        mine = {h: states.get(h) for h in hours}
        if mine != last:
            _say("runs: " + "  ".join(f"{hour_str(h)[-5:]}={s or '-'}" for h, s in mine.items()))
            last = mine
        if all(s in ("success", "failed") for s in mine.values()):
            return mine
        if any(s == "failed" for s in mine.values()):
            # later hours now wait on depends_on_past forever: stop and say so (docs/airflow.md,
            # "Recovering a failed hour")
            return mine
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs not finished after {timeout:.0f} s: {mine}")
        time.sleep(5)


def wait_backfills_complete(running, dag_id: str, timeout: float = 180.0) -> None:
    """Wait until the scheduler has marked this DAG's backfills complete.

    The scheduler does so in a periodic loop after the last run finishes; stopping it before that
    leaves an "active" backfill that makes the next ``backfill create`` fail.
    """
    from streamtrain_airflow.airflow_home import active_backfills

    deadline = time.monotonic() + timeout
    while active_backfills(running.home, dag_id):
        running.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the backfill of {dag_id} was not marked complete in {timeout:.0f} s")
        time.sleep(2)


def table(cfg, hours: list[int]) -> str:
    """Per-hour table from the model store: hour, save kind, version, rows, AUC, seconds."""
    from streamtrain_airflow.store_view import chain_rows

    by_hour = {}
    for row in chain_rows(cfg):
        by_hour[row["hour"]] = row
    lines = [f"{'hour':<14} {'save':<8} {'version':<8} {'rows':>8} {'auc':>7} {'logloss':>8} "
             f"{'seconds':>8}"]
    for h in hours:
        row = by_hour.get(h)
        if row is None:
            lines.append(f"{hour_str(h):<14} {'-':<8} (not in the chain)")
            continue
        m = row.get("metrics") or {}
        secs = m.get("seconds")
        total = sum(secs.values()) if isinstance(secs, dict) else secs
        fmt = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) else "-"  # noqa: E731
        lines.append(f"{hour_str(h):<14} {row['kind']:<8} {row['version'] or '-':<8} "
                     f"{fmt(m.get('rows'), '>8d'):>8} {fmt(m.get('auc'), '>7.4f'):>7} "
                     f"{fmt(m.get('logloss'), '>8.4f'):>8} {fmt(total, '>8.1f'):>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="streamtrain demo", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "examples" / "demo.toml"))
    p.add_argument("--hours", type=int, default=DEMO_HOURS)
    p.add_argument("--start", default=DEMO_START, help="first data hour, YYYY-MM-DDTHH")
    p.add_argument("--rows-per-hour", type=int, default=DEMO_ROWS)
    p.add_argument("--home", default=str(REPO / "var" / "airflow"), help="AIRFLOW_HOME")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the runs")
    p.add_argument("--keep-running", action="store_true",
                   help="leave api-server/scheduler/dag-processor up (UI) after the table")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite",
                   help="metadata database: SQLite (<home>/airflow.db) or the project's private "
                        "PostgreSQL (<home>/postgres, loopback, started and stopped here)")
    args = p.parse_args(argv)

    from trainer.config import load_config

    from streamtrain_airflow.airflow_home import (
        admin_password, free_port, start_airflow, start_database, stop_airflow, stop_database,
        wait_http, write_config,
    )

    config = str(Path(args.config).resolve())
    cfg = load_config(config)
    dag_id = dag_id_for(config)
    start = hour_index(args.start)
    hours = list(range(start, start + args.hours))
    skip = [start + 3] if args.hours >= 5 else []
    home = Path(args.home).resolve()
    t0 = time.monotonic()

    ensure_data(config, cfg, start, args.hours, skip, args.rows_per_hour)

    port = free_port(args.port)
    # scheduled runs (catchup) are limited to the demo's hours; the DAG is paused afterwards
    postgres = home / "postgres" if args.db == "postgres" else None
    write_config(home, port=port, config_dir=Path(config).parent, start=_iso(hours[0]),
                 end=_iso(hours[-1]), postgres_root=postgres,
                 database_url="postgresql+psycopg2://unset@127.0.0.1:54320/airflow" if postgres
                 else "")
    start_database(home)  # PostgreSQL: started here, its port written into airflow.cfg
    running, kept, code = None, False, 1
    try:
        _say(f"airflow: AIRFLOW_HOME={home} ("
             + (f"PostgreSQL in {postgres}, 127.0.0.1" if postgres else "SQLite")
             + ", LocalExecutor, parallelism 4)")
        airflow_cli(home, "db", "migrate", timeout=600)

        # Backfill runs are created before the scheduler starts: with SQLite, `backfill create`
        # next to a busy scheduler failed with "database is locked" half-way through.
        created = prepare_backfill(home, dag_id, hours[0], hours[-1], DEMO_SENSOR)
        _say("backfill created: airflow backfill create --dag-id %s --from-date %s --to-date %s "
             "--reprocess-behavior failed --max-active-runs 1"
             % (dag_id, _iso(hours[0]), _iso(hours[-1]))
             if created else "backfill: every hour already ran successfully; nothing to create")
        running = start_airflow(home, port, outlive_caller=args.keep_running)
        wait_http(f"{running.url}/api/v2/monitor/health", 180, running)
        _say(f"airflow: api-server {running.url}, scheduler and dag-processor up "
             f"(process groups {', '.join(str(p.pid) for p in running.procs.values())})")
        try:
            states = wait_runs(running, dag_id, hours, args.timeout)
            wait_backfills_complete(running, dag_id)
        finally:
            airflow_cli(home, "dags", "pause", dag_id, check=False)
        print()
        print(table(cfg, hours))
        print()
        failed = [hour_str(h) for h, s in states.items() if s != "success"]
        _say(f"{len(hours) - len(failed)}/{len(hours)} runs succeeded in "
             f"{time.monotonic() - t0:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
        _say(f"model: {cfg.model_dir} (ledger.jsonl, versions/, donefile); "
             f"`{Path(sys.executable).parent}/streamtrain chain --config {config}`")
        pw = admin_password(home)
        _say(f"UI: {running.url}  (user admin, password {pw or '?'}; stored in "
             f"{home}/simple_auth_manager_passwords.json.generated)")
        _say(f"keep the UI up: make -C {REPO} ui AIRFLOW_HOME_DIR={home}   "
             f"(stop it: make -C {REPO} ui-stop AIRFLOW_HOME_DIR={home})")
        code = 0 if not failed else 1
        if args.keep_running:
            _say("leaving Airflow running; stop it with: kill -- " + " ".join(f"-{p.pid}" for p in running.procs.values())
                 + (f"; then make -C {REPO} ui-stop AIRFLOW_HOME_DIR={home} (stops PostgreSQL)"
                    if postgres else ""))
            running = kept = True
    finally:
        if running is not None and not kept:
            stop_airflow(running)
        if not kept and stop_database(home):
            _say(f"stopped the PostgreSQL of {postgres}")
    return code


if __name__ == "__main__":
    sys.exit(main())
