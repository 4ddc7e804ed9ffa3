"""A private PostgreSQL for Airflow's metadata database, started and stopped by the project.

Debian's ``postgresql`` package (``scripts/setup.sh`` installs it) provides the server binaries;
this module gives one Airflow home a cluster of its own:

* ``<root>/data``: the cluster (``initdb``), owned by the user the server runs as;
* ``<root>/password``: the generated password of role ``airflow`` (mode 0600);
* the server listens on ``127.0.0.1`` only (no Unix socket), on a free port chosen at each start,
  with ``scram-sha-256`` password authentication; ``max_connections`` leaves room for
  LocalExecutor's workers.

PostgreSQL refuses to run as root: as root the server (and ``initdb``, ``pg_ctl``) run as the
``postgres`` user the package creates (override with ``STREAMTRAIN_POSTGRES_USER``); otherwise as
the calling user. Every folder above ``<root>`` must then be traversable by that user.
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: The role and database Airflow uses.
ROLE = "airflow"
DATABASE = "airflow"


class PostgresError(RuntimeError):
    """The private PostgreSQL could not be set up, started or stopped (the reason is in the text)."""


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL server binary (``initdb``, ``pg_ctl``): Debian keeps them in
    ``/usr/lib/postgresql/<major>/bin``, not on ``PATH``."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise PostgresError(f"no PostgreSQL {name} in /usr/lib/postgresql/*/bin or on PATH: install "
                        f"Debian's postgresql package (scripts/setup.sh, `make setup`, does)")


def server_user() -> str:
    """The user the server runs as: ``postgres`` (or ``STREAMTRAIN_POSTGRES_USER``) when root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    return os.environ.get("STREAMTRAIN_POSTGRES_USER", "postgres")


@dataclass
class PrivatePostgres:
    """The cluster under ``root``; :meth:`start` returns the port it listens on."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()  # the server's commands run from "/"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.data / "server.log"

    def password(self) -> str:
        return (self.root / "password").read_text().strip()

    def url(self, port: int, database: str = DATABASE) -> str:
        """SQLAlchemy URL of ``database`` (what ``[database] sql_alchemy_conn`` takes)."""
        return f"postgresql+psycopg2://{ROLE}:{self.password()}@127.0.0.1:{port}/{database}"

    # -- running commands as the server's user ------------------------------------------------
    def _as_server_user(self, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
        user = server_user()
        kwargs = {}
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                raise PostgresError(f"no user {user!r} to run PostgreSQL as (it refuses root): "
                                    f"install Debian's postgresql package, or set "
                                    f"STREAMTRAIN_POSTGRES_USER") from None
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/",
                              stdin=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C.UTF-8"},
                              **kwargs)
        return done

    def _check(self, done: subprocess.CompletedProcess, what: str) -> None:
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-2000:]
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise PostgresError(f"{what} exited {done.returncode}: {tail}"
                                + (f"\n{self.log_file}:\n{log}" if log else ""))

    # -- the cluster --------------------------------------------------------------------------
    def ensure_cluster(self) -> None:
        """``initdb`` the cluster once (role ``airflow`` with a generated password)."""
        if (self.data / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam(server_user())
        secret = self.root / "password"
        if not secret.exists():
            secret.write_text(secrets.token_urlsafe(24) + "\n")
            secret.chmod(0o600)
        self.data.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.root / "initdb.pwfile"  # initdb reads it as the server's user; removed at once
        pwfile.write_text(self.password() + "\n")
        if os.geteuid() == 0:
            os.chown(self.data, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        pwfile.chmod(0o600)
        try:
            done = self._as_server_user([pg_bin("initdb"), "-D", str(self.data), "-U", ROLE,
                                         "--auth=scram-sha-256", f"--pwfile={pwfile}",
                                         "-E", "UTF8", "--locale=C.UTF-8"])
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0 and "Permission denied" in done.stderr:
            raise PostgresError(f"initdb as {user.pw_name} cannot use {self.data}: every folder "
                                f"above it must be traversable by {user.pw_name} ({done.stderr.strip()})")
        self._check(done, "initdb")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# streamtrain: loopback only, no Unix socket; the port is given at start\n"
                       "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                       "max_connections = 200\nfsync = on\n")

    def running_port(self) -> int | None:
        """The port of the running server of this cluster, or None."""
        pid_file = self.data / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            os.kill(int(lines[0]), 0)
            return int(lines[3])
        except (OSError, ValueError, IndexError):
            return None

    def start(self, port: int) -> int:
        """Start the server on ``127.0.0.1:port`` (or return the port it already runs on) and
        make sure database ``airflow`` exists."""
        from streamtrain_airflow.airflow_home import free_port

        self.ensure_cluster()
        running = self.running_port()
        if running:
            return running
        port = free_port(port)
        done = self._as_server_user([pg_bin("pg_ctl"), "-D", str(self.data), "-l",
                                     str(self.log_file), "-o", f"-p {port}", "-w", "-t", "120",
                                     "start"])
        self._check(done, "pg_ctl start")
        self.create_database(port, DATABASE)
        return port

    def stop(self) -> bool:
        """Stop the server (fast shutdown). Returns whether one was running."""
        if self.running_port() is None:
            return False
        done = self._as_server_user([pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                                     "-t", "60", "stop"])
        self._check(done, "pg_ctl stop")
        return True

    def _connect(self, port: int):
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=port, user=ROLE, password=self.password(),
                               dbname="postgres", connect_timeout=30)
        con.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        return con

    def create_database(self, port: int, name: str, template: str | None = None) -> None:
        """``CREATE DATABASE name [TEMPLATE template]`` unless it exists."""
        con = self._connect(port)
        try:
            with con.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"'
                                + (f' TEMPLATE "{template}"' if template else ""))
        finally:
            con.close()
