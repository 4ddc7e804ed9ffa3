"""The training job under the real ``mpiexec``: layouts, exactly-once rows, failures, determinism."""
from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support import use_failing_network, streamtrain
from trainer.config import load_config
from trainer.hours import hour_index, partition_relpath
from trainer import store

pytestmark = pytest.mark.slow

H0 = hour_index("2026-11-26T00")


def write_partition(cfg, hour, files=2, rows=1500, seed=0, label=None):
    """A small partition of `hour` in `cfg.data_root`; returns the number of rows written."""
    rng = np.random.default_rng(seed + hour)
    part = f"{cfg.data_root}/{partition_relpath(hour)}"
    import os
    os.makedirs(part, exist_ok=True)
    for f in range(files):
        u = rng.zipf(1.3, rows) % 3000
        i = rng.zipf(1.3, rows) % 9000
        logit = (u % 7 - 3) * 0.4 + (i % 5 - 2) * 0.5
        y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        if label is not None:
            y = label(y)
        tags = pa.array([list(rng.integers(-5, 5, rng.integers(0, 3))) for _ in range(rows)],
                        pa.list_(pa.int64()))
        pq.write_table(pa.table({
            "label": y, "user_id": u.astype(np.int64), "item_id": i.astype(np.int64),
            "category": rng.integers(0, 50, rows), "tags": tags,
            "d0": rng.normal(size=rows), "d1": rng.normal(size=rows), "d2": rng.normal(size=rows),
        }), f"{part}/part-{f}.parquet", row_group_size=500)
    open(f"{part}/_SUCCESS", "w").close()
    return files * rows


def result_of(proc) -> dict:
    for line in proc.stdout.splitlines():
        if line.startswith("[streamtrain] result "):
            return json.loads(line[len("[streamtrain] result "):])
    raise AssertionError(f"no result line:\n{proc.stdout}\n{proc.stderr}")


def train(config, hour, ranks, **kw):
    return streamtrain("train", "--config", str(config), "--hour", hstr(hour), mpi_ranks=ranks,
                       **kw)


def hstr(hour):
    from trainer.hours import hour_str
    return hour_str(hour)


@pytest.mark.parametrize("servers, workers", [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_two_hours_train_every_row_once_and_chain(model_config, servers, workers):
    path = model_config(servers=servers, workers=workers)
    cfg = load_config(path)
    rows = [write_partition(cfg, H0), write_partition(cfg, H0 + 1, files=3)]

    first = train(path, H0, servers + workers)
    assert first.returncode == 0, first.stderr
    got = result_of(first)
    assert got["kind"] == "full" and got["rows"] == rows[0] and got["rows_read"] == rows[0]
    assert 0.5 < got["auc"] < 1
    assert streamtrain("save", "--config", str(path), "--hour", hstr(H0)).returncode == 0

    second = train(path, H0 + 1, servers + workers)
    assert second.returncode == 0, second.stderr
    got = result_of(second)
    assert got["kind"] == "delta" and got["parent"] == "v000001" and got["rows"] == rows[1]
    saved = streamtrain("save", "--config", str(path), "--hour", hstr(H0 + 1))
    assert saved.returncode == 0 and "v000002" in saved.stdout

    chain = store.load_chain(cfg.model_dir, verify=True)
    assert [v.version for v in chain.versions] == ["v000001", "v000002"]
    from trainer.store.predict import model_table

    assert len(model_table(chain)) == got["table_rows"]


def test_an_hour_already_in_the_chain_is_a_no_op(model_config):
    path = model_config()
    cfg = load_config(path)
    write_partition(cfg, H0)
    assert train(path, H0, 2).returncode == 0
    assert streamtrain("save", "--config", str(path), "--hour", hstr(H0)).returncode == 0
    again = train(path, H0, 2)
    assert again.returncode == 0
    assert "already in chain as v000001" in again.stdout
    assert not (store.StoreLayout(cfg.model_dir).staging_dir(H0)).exists()
    resave = streamtrain("save", "--config", str(path), "--hour", hstr(H0))
    assert resave.returncode == 0 and "nothing to do" in resave.stdout
    assert len(store.read_state(store.StoreLayout(cfg.model_dir)).versions) == 1


def test_too_few_ranks_is_refused(model_config):
    path = model_config(servers=2, workers=1)
    write_partition(load_config(path), H0)
    proc = train(path, H0, 2)
    assert proc.returncode != 0
    assert "need at least 3 ranks" in proc.stderr


@pytest.mark.parametrize("fault", ["raise@2", "kill@2", "raise@1"])
def test_a_failing_rank_fails_every_rank_quickly(model_config, tmp_path, fault):
    path = model_config(servers=1, workers=2)
    use_failing_network(path, tmp_path, fault)
    write_partition(load_config(path), H0, rows=4000)
    started = time.monotonic()
    proc = train(path, H0, 3, timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - started < 60
    if fault.startswith("raise"):
        assert f"rank {fault[-1]}/3" in proc.stderr and "injected fault" in proc.stderr
    assert not (store.StoreLayout(load_config(path).model_dir).ledger).exists()


def test_bad_label_fails_the_hour_naming_file_and_column(model_config):
    path = model_config()
    cfg = load_config(path)
    write_partition(cfg, H0, label=lambda y: np.where(np.arange(y.size) == 7, 3, y))
    proc = train(path, H0, 2)
    assert proc.returncode != 0
    assert "label" in proc.stderr and "part-0.parquet" in proc.stderr


def test_incomplete_partition_is_never_read(model_config):
    path = model_config()
    cfg = load_config(path)
    write_partition(cfg, H0)
    import os
    os.remove(f"{cfg.data_root}/{partition_relpath(H0)}/_SUCCESS")
    proc = train(path, H0, 2)
    assert proc.returncode != 0 and "_SUCCESS" in proc.stderr


def test_one_worker_replays_bit_identically(model_config, tmp_path):
    path = model_config(servers=2, workers=1)
    cfg = load_config(path)
    write_partition(cfg, H0)
    staged = store.StoreLayout(cfg.model_dir).staging_dir(H0)
    runs = []
    for _ in range(2):
        assert train(path, H0, 3).returncode == 0
        runs.append({p.name: p.read_bytes() for p in sorted(staged.iterdir())
                     if p.name != "meta.json"})
    assert runs[0].keys() == runs[1].keys() and len(runs[0]) == cfg.table_num_shards + 1
    for name in runs[0]:
        assert runs[0][name] == runs[1][name], name


def test_more_workers_than_row_groups(model_config):
    """A worker with nothing to read still takes part in every barrier and the job succeeds."""
    path = model_config(servers=1, workers=3)
    cfg = load_config(path)
    rows = write_partition(cfg, H0, files=1, rows=400)  # one row group
    proc = train(path, H0, 4)
    assert proc.returncode == 0, proc.stderr
    got = result_of(proc)
    assert got["rows"] == rows and got["rows_read"] == rows


def _children(pid: int) -> list[int]:
    from trainer.process import parent_pid
    import os
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and parent_pid(int(p)) == pid]


def _alive(pids) -> list[int]:
    from trainer.process import process_start
    return [p for p, started in pids if process_start(p) == started]


@pytest.mark.parametrize("victim", ["hydra_pmi_proxy", "mpiexec"])
def test_no_rank_outlives_a_lost_launcher(model_config, victim):
    """SIGKILL the proxy (or mpiexec) mid-hour: every rank is gone within the configured
    timeout, run-hour fails, and the chain and the staging are as before."""
    import os
    import signal
    import subprocess
    from tests.support import PYTHON, REPO
    from trainer.gendata import generate_hours
    from trainer.process import process_start

    path = model_config(servers=1, workers=2)
    cfg = load_config(path)
    generate_hours(cfg, cfg.data_root, H0, 1, 400000, seed=5)
    run = subprocess.Popen([PYTHON, "-m", "trainer", "run-hour", "--config", str(path),
                            "--hour", hstr(H0)], cwd=REPO, text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    for line in run.stdout:
        if "training as" in line:
            break
    (mpiexec,) = _children(run.pid)
    (proxy,) = _children(mpiexec)
    ranks = [(p, process_start(p)) for p in _children(proxy)]
    assert len(ranks) == 3
    os.kill(proxy if victim == "hydra_pmi_proxy" else mpiexec, signal.SIGKILL)
    deadline = time.monotonic() + cfg.mpi.timeout_seconds
    while _alive(ranks) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _alive(ranks)
    for pid in left:  # never leave a spinning orphan behind a failed test
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"ranks left after {cfg.mpi.timeout_seconds}s"
    run.stdout.read()
    assert run.wait(timeout=cfg.mpi.timeout_seconds) != 0
    assert "streamtrain: error: mpiexec exited" in run.stderr.read()
    layout = store.StoreLayout(cfg.model_dir)
    assert not layout.ledger.exists() and list(layout.staging.iterdir()) == []
