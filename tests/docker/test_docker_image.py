"""docker/: build the image from scratch with buildah (base from debootstrap, no registry) and run
the project inside it: ``streamtrain --help``, an import of every module, one ``run-hour``.

Needs root, buildah and debootstrap (``make setup`` installs them); a failure says which.
Everything the test builds lives under ``var/docker-test-<pid>-<id>/`` and is removed at the end
(or by the next run, when the process that made it is gone); only the debootstrap base tarball
(``var/docker/base/``, keyed by its package list) is kept.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import uuid

import pytest
import yaml

from tests.support import REPO, write_model_config

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.timeout(2400)]

HOUR = "2026-11-26T00"


class Buildah:
    """buildah on a private storage folder (vfs driver, chroot isolation: no daemon, no root
    filesystem tricks), as ``docker/build.sh`` uses it."""

    def __init__(self, root):
        self.root = root

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["buildah", "--root", str(self.root / "storage/root"),
             "--runroot", str(self.root / "storage/run"), "--storage-driver", "vfs", *args],
            capture_output=True, text=True, timeout=timeout)

    def run(self, container: str, script: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """``sh -c script`` in the working container, from /opt/streamtrain, as its user would."""
        return self("run", "--isolation", "chroot", "--workingdir", "/opt/streamtrain",
                    container, "--", "sh", "-c", script, timeout=timeout)

    def python(self, container: str, source: str, env: dict | None = None):
        """The image's venv Python on `source`, with `env` added to the image's environment."""
        assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in (env or {}).items())
        return self.run(container, f"env {assignments} .venv/bin/python - <<'EOF'\n{source}\nEOF")


def _last_lines(proc: subprocess.CompletedProcess, n: int = 30) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-n:])


@pytest.fixture(scope="module")
def workdir():
    for left in (REPO / "var").glob("docker-test-*-*"):  # by runs killed before their clean-up
        pid = left.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(left)
    root = REPO / "var" / f"docker-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    yield root
    _remove(root)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _remove(root) -> None:
    """Containers, images and the storage folder; never crosses into a mount left behind."""
    buildah = Buildah(root)
    buildah("rm", "--all")
    buildah("rmi", "--all", "--force")
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=True)


@pytest.fixture(scope="module")
def container(workdir):
    """A working container of the image built from scratch by docker/build.sh."""
    for tool in ("buildah", "debootstrap"):
        assert shutil.which(tool), f"{tool} not found: make setup installs it (apt-get)"
    tag = f"localhost/streamtrain-test:{workdir.name}"
    build = subprocess.run(
        ["bash", "docker/build.sh", "--tag", tag], cwd=REPO, capture_output=True, text=True,
        timeout=2000, env={**os.environ, "STREAMTRAIN_BUILDAH_ROOT": str(workdir / "storage"),
                           "STREAMTRAIN_WHEELHOUSE": str(workdir / "wheelhouse")})
    assert build.returncode == 0, _last_lines(build)
    assert build.stdout.strip().splitlines()[-1] == tag
    made = Buildah(workdir)("from", "--pull=never", tag)
    assert made.returncode == 0, _last_lines(made)
    return made.stdout.strip()


def test_help_lists_the_commands(workdir, container):
    proc = Buildah(workdir).run(container, "streamtrain --help")
    assert proc.returncode == 0, _last_lines(proc)
    for command in ("gen-data", "train", "save", "run-hour", "chain", "predict", "demo"):
        assert command in proc.stdout


IMPORT_EVERY_MODULE = r"""
import configparser, importlib, pkgutil
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
names = set()
for package in cfg["options"]["packages"].split():
    module = importlib.import_module(package)
    names.add(package)
    for info in pkgutil.iter_modules(module.__path__, package + "."):
        if info.name.endswith(".__main__"):  # runs the command line
            continue
        importlib.import_module(info.name)
        names.add(info.name)
import psycopg2, asyncpg, jax, airflow
from mpi4py import MPI
print(len(names), " ".join(sorted(names)))
"""


def test_every_module_imports(workdir, container):
    """Every module of every package setup.cfg installs, with the compiled table, plus the
    runtime pieces the compose file relies on (MPI, PostgreSQL driver)."""
    proc = Buildah(workdir).python(container, IMPORT_EVERY_MODULE)
    assert proc.returncode == 0, _last_lines(proc)
    count, names = proc.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(count) > 40
    for name in ("pstable._table", "trainer.cli", "trainer.store", "trainer.network.zoo",
                 "streamtrain_airflow.operators", "streamtrain_airflow.ui"):
        assert name in names.split()


def test_one_hour_trains_and_commits(workdir, container, tmp_path):
    """gen-data + run-hour (a real mpiexec job: one server, one worker) + chain --verify."""
    buildah = Buildah(workdir)
    config = write_model_config(tmp_path / "m")  # the same absolute path inside the container
    copied = buildah("copy", container, str(config), str(config))
    assert copied.returncode == 0, _last_lines(copied)
    trained = buildah.run(container, f"streamtrain gen-data --config {config} --start {HOUR} "
                          f"--hours 1 --rows-per-hour 3000 && "
                          f"streamtrain run-hour --config {config} --hour {HOUR}")
    assert trained.returncode == 0, _last_lines(trained)
    result = json.loads(next(line for line in trained.stdout.splitlines() if "] result " in line)
                        .split("] result ", 1)[1])
    assert result["kind"] == "full" and result["rows"] == 3000
    listing = buildah.run(container, f"streamtrain chain --config {config} --verify --json")
    assert listing.returncode == 0, _last_lines(listing)
    listed = json.loads(listing.stdout.split("\nchain verified")[0])
    assert [v["kind"] for v in listed["versions"]] == ["full"]
    assert listed["versions"][0]["metrics"]["rows"] == 3000
    assert 0.5 < listed["versions"][0]["metrics"]["auc"] < 1.0
    assert not (tmp_path / "m" / "model").exists()  # it all happened inside the container


AIRFLOW_AS_COMPOSED = r"""
import json
from airflow import plugins_manager
from airflow.configuration import conf
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(conf.get("core", "dags_folder"))
print(json.dumps({"dags": sorted(bag.dag_ids), "dag_errors": bag.import_errors,
                  "plugins": sorted(p["name"] for p in plugins_manager.get_plugin_info()),
                  "plugin_errors": plugins_manager.get_import_errors(),
                  "database": conf.get("database", "sql_alchemy_conn")}))
"""


def test_the_compose_files_airflow_settings_work_in_the_image(workdir, container):
    """With the scheduler's environment of docker/compose.yaml, Airflow in the image parses the
    cluster model's DAG and loads the UI plugin, and its PostgreSQL engines (psycopg2, asyncpg)
    are made (no database is contacted: PostgreSQL itself is not run here)."""
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    env = {key: "secret" if key.endswith("JWT_SECRET") else value
           for key, value in compose["services"]["scheduler"]["environment"].items()}
    proc = Buildah(workdir).python(container, AIRFLOW_AS_COMPOSED, env)
    assert proc.returncode == 0, _last_lines(proc)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["dags"] == ["streamtrain_cluster"] and seen["dag_errors"] == {}
    assert seen["plugins"] == ["streamtrain"] and seen["plugin_errors"] == {}
    assert seen["database"] == env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
