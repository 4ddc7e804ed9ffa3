"""docker/compose.yaml holds together: every streamtrain node is the one image, the model config
it trains loads and places its ranks on the compose file's MPI hosts, and every node that touches
the data or the model store mounts it at the config's path. (No engine here to run it: see
docs/docker.md for what was and was not run.)"""
from pathlib import Path

import yaml

from tests.support import REPO
from trainer.config import load_config

DOCKER = REPO / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
NODES = {name: s for name, s in SERVICES.items() if name != "postgres"}
CONFIG = load_config(DOCKER / "models" / "cluster.toml")


def _mounts(service: dict) -> dict:
    """container path -> volume name"""
    return {m.split(":")[1]: m.split(":")[0] for m in service.get("volumes", [])}


def _node_role(service: dict) -> str:
    command = service["command"]
    assert command[0] == "/opt/streamtrain/docker/node.sh" and (DOCKER / "node.sh").exists()
    return command[1]


def test_the_shape_has_every_component():
    assert set(SERVICES) >= {"postgres", "init", "api-server", "scheduler", "dag-processor"}
    roles = {name: _node_role(s) for name, s in NODES.items()}
    assert {"init", "api-server", "scheduler", "dag-processor", "mpi-host"} <= set(roles.values())


def test_every_node_is_the_one_image_built_from_the_dockerfile():
    for name, service in NODES.items():
        assert service["image"] == "streamtrain:latest", name
        assert service["build"]["dockerfile"] == "docker/Dockerfile", name
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).exists()
        assert "BASE" in service["build"]["args"], name


def test_the_ranks_land_on_the_mpi_hosts_over_ssh():
    mpi_hosts = {name for name, s in NODES.items() if _node_role(s) == "mpi-host"}
    assert set(CONFIG.mpi.hosts) == mpi_hosts
    assert sum(CONFIG.mpi.ranks_per_host) == CONFIG.mpi.servers + CONFIG.mpi.workers
    assert CONFIG.mpi.launcher == "ssh"
    # mpiexec runs where LocalExecutor runs the train task: the scheduler shares the ssh key
    for name in mpi_hosts | {"scheduler", "init"}:
        assert _mounts(NODES[name])["/root/.ssh"] == "ssh", name


def test_data_and_model_store_are_shared_at_the_configs_paths():
    scheduler = NODES["scheduler"]["environment"]
    config_dir = Path(scheduler["STREAMTRAIN_CONFIG_DIR"])
    assert config_dir == Path("/opt/streamtrain/docker/models")  # the image's copy of docker/models
    for name in [n for n, s in NODES.items() if _node_role(s) == "mpi-host"] + ["scheduler"]:
        mounts = _mounts(NODES[name])
        assert mounts[CONFIG.data_root] == "data", name
        assert mounts[CONFIG.model_dir] == "model-store", name
    assert _mounts(NODES["api-server"])[CONFIG.model_dir] == "model-store"  # the UI reads the store


def test_airflow_talks_to_the_postgres_service():
    database = SERVICES["postgres"]["environment"]
    expected = (f"postgresql+psycopg2://{database['POSTGRES_USER']}:{database['POSTGRES_PASSWORD']}"
                f"@postgres:5432/{database['POSTGRES_DB']}")
    for name in ("init", "api-server", "scheduler", "dag-processor"):
        env = NODES[name]["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == expected, name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://api-server:8080/")
    assert NODES["api-server"]["ports"] == ["127.0.0.1:8080:8080"]
