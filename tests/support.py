"""Helpers shared by every test folder: a small model config on temporary folders, and a way to
run the real ``streamtrain`` / ``mpiexec`` commands of this environment.

Import as ``from tests.support import ...`` (the test folders are packages, so no helper needs a
name unique across folders)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")

SMALL_MODEL = """
name = "{name}"
data_root = "{root}/data"
model_dir = "{root}/model"

[columns]
label = "label"
slots = ["user_id", "item_id", "category", "tags"]
dense = ["d0", "d1", "d2"]

[table]
dim = 4
num_shards = 4
seed = 11
delete_after_unseen_days = 2

[table.optimizer]
rule = "adagrad"
learning_rate = 0.05

[table.admission]
policy = "none"

[network]
learning_rate = 0.003

[network.options]
hidden = [16]

[train]
batch_size = 256
progress_seconds = 1.0

[mpi]
servers = {servers}
workers = {workers}
timeout_seconds = 60
"""


def write_model_config(root: Path, name: str = "small", servers: int = 1, workers: int = 1,
                       extra: str = "") -> Path:
    """A small model config whose data and model live under `root`; `extra` is appended TOML."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.toml"
    path.write_text(SMALL_MODEL.format(name=name, root=root, servers=servers, workers=workers)
                    + extra)
    return path


def streamtrain(*args: str, timeout: float = 300, env: dict | None = None,
                mpi_ranks: int | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m trainer ARGS`` (under the venv's mpiexec with `mpi_ranks` ranks)."""
    command = [PYTHON, "-m", "trainer", *args]
    if mpi_ranks:
        command = [MPIEXEC, "-n", str(mpi_ranks), *command]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


#: A user's network that fails on one worker rank at its first batch (the callback runs when the
#: compiled step runs, not when it is traced or checked): ``raise@R`` raises, ``kill@R`` is the
#: rank killed by a signal.
FAILING_NETWORK = """
import os
import signal

import jax
import jax.numpy as jnp

FAULT = "{fault}"


def _fail_on_my_rank():
    action, _, rank = FAULT.partition("@")
    if os.environ.get("PMI_RANK") != rank:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected fault ({{FAULT}})")


class Failing:
    def init(self, key):
        return {{"w": jnp.zeros((1,), jnp.float32)}}

    def apply(self, params, inputs):
        jax.debug.callback(_fail_on_my_rank)
        return jnp.sum(inputs.dense, axis=1) * params["w"][0] + inputs.wide


def factory(spec):
    return Failing()
"""


def use_failing_network(config_path: Path, folder: Path, fault: str) -> None:
    """Make the model config at `config_path` train :data:`FAILING_NETWORK` with `fault`
    (``raise@R`` / ``kill@R``), written into `folder`."""
    (folder / "failing.py").write_text(FAILING_NETWORK.format(fault=fault))
    text = config_path.read_text().replace(
        "[network]\n", f'[network]\nmodel = "{folder}/failing.py:factory"\n')
    config_path.write_text(text.replace("[network.options]\nhidden = [16]\n", ""))
