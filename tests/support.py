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
