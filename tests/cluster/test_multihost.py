"""The training job across namespaced hosts (``scripts/netns_hosts.py``): ranks on different
hosts talk over TCP on the bridge, the result is bit-identical to one host, partitions can come
from S3, and a lost host fails the job everywhere without touching the chain."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import PYTHON, REPO, streamtrain, write_model_config
from trainer import store
from trainer.config import load_config
from trainer.gendata import generate_hours
from trainer.hours import hour_index, hour_str, partition_relpath

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

H0 = hour_index("2026-11-26T00")
#: How soon after a host is lost every other host's processes must be gone.
LOST_HOST_SECONDS = 20.0


def toml_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def cluster_config(root: Path, servers: int, workers: int, mpi: dict | None = None,
                   data_root: str = "", extra: str = "") -> Path:
    """The tests' small model with `[mpi]` keys (from ``Hosts.mpi_settings``) and, optionally,
    another data root; `root` holds its model store."""
    path = write_model_config(root, servers=servers, workers=workers, extra=extra)
    text = path.read_text()
    keys = "".join(f"{k} = {toml_value(v)}\n" for k, v in (mpi or {}).items())
    text = text.replace("[mpi]\n", f"[mpi]\n{keys}")
    if data_root:
        text = text.replace(f'data_root = "{root}/data"', f'data_root = "{data_root}"')
    path.write_text(text)
    return path


def write_hours(config: Path, hours: int, rows: int, start: int = H0) -> list[int]:
    cfg = load_config(config)
    report = generate_hours(cfg.columns, cfg.data_root, start, hours, rows, seed=5)
    return [r["rows"] for r in report]


def run_hour(config: Path, hour: int, timeout: float = 300) -> subprocess.CompletedProcess:
    return streamtrain("run-hour", "--config", str(config), "--hour", hour_str(hour),
                       timeout=timeout)


def committed_files(config: Path) -> dict[str, dict[str, bytes]]:
    """Every committed version's files (but meta.json, which records paths and times)."""
    cfg = load_config(config)
    layout = store.StoreLayout(cfg.model_dir)
    out = {}
    for version in store.read_state(layout).versions:
        folder = layout.version_dir(version)
        out[version] = {p.name: p.read_bytes() for p in sorted(folder.iterdir())
                        if p.name != "meta.json"}
    return out


def assert_same_versions(a: Path, b: Path, count: int) -> None:
    got, expected = committed_files(a), committed_files(b)
    assert list(got) == list(expected) and len(got) == count
    for version, files in expected.items():
        assert files.keys() == got[version].keys(), version
        for name in files:
            assert got[version][name] == files[name], f"{version}/{name} differs"


def test_three_hosts_train_three_hours_bit_identical_to_one_host(tmp_path, make_hosts):
    hosts = make_hosts(["h1", "h2", "h3"])
    # server 0 on h1, server 1 on h2, the worker on h3 (one worker: a deterministic order)
    spread = cluster_config(tmp_path / "spread", 2, 1, mpi=hosts.mpi_settings([1, 1, 1]))
    alone = cluster_config(tmp_path / "alone", 2, 1)
    rows = write_hours(spread, 3, 6000)
    assert write_hours(alone, 3, 6000) == rows
    before = {h.name: sum(hosts.traffic_bytes(h.name)) for h in hosts.hosts}
    for hour in range(H0, H0 + 3):
        for config in (spread, alone):
            done = run_hour(config, hour)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sent = {h.name: sum(hosts.traffic_bytes(h.name)) - before[h.name] for h in hosts.hosts}
    # every pull and push crossed the bridge: the worker's host carried them all
    assert sent["h3"] > 2_000_000 and sent["h1"] > 500_000 and sent["h2"] > 500_000, sent
    assert_same_versions(spread, alone, 3)
    assert streamtrain("chain", "--config", str(spread), "--verify").returncode == 0


def test_two_hosts_train_from_s3_as_from_local_disk(tmp_path, make_hosts, start_s3):
    hosts = make_hosts(["h1", "h2"])
    s3 = start_s3(hosts.gateway)  # reachable from every namespace over the bridge
    alone = cluster_config(tmp_path / "alone", 1, 1)
    remote = cluster_config(tmp_path / "remote", 1, 1, mpi=hosts.mpi_settings([1, 1]),
                            data_root=f"s3://{s3.bucket}/stream", extra=s3.config_toml())
    write_hours(alone, 2, 6000)
    s3.upload(tmp_path / "alone" / "data", "stream")
    for hour in (H0, H0 + 1):
        for config in (remote, alone):
            done = run_hour(config, hour)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_same_versions(remote, alone, 2)
    chain = store.load_chain(load_config(remote).model_dir, verify=True)
    recorded = chain.versions[-1].meta["partition"]
    assert recorded["path"] == f"s3://{s3.bucket}/stream/{partition_relpath(H0 + 1)}"
    local = store.load_chain(load_config(alone).model_dir).versions[-1].meta["partition"]
    assert recorded["files"] == local["files"]  # names, sizes, sha256

    # a half-uploaded hour (files, no _SUCCESS) is never read
    write_hours(alone, 1, 6000, start=H0 + 2)
    half = tmp_path / "alone" / "data" / partition_relpath(H0 + 2)
    (half / "_SUCCESS").unlink()
    s3.upload(tmp_path / "alone" / "data", "stream")
    done = run_hour(remote, H0 + 2)
    assert done.returncode != 0 and "not complete (no _SUCCESS)" in done.stdout + done.stderr
    assert len(store.read_state(store.StoreLayout(load_config(remote).model_dir)).versions) == 2


def test_a_lost_host_fails_the_job_everywhere_and_a_resharded_retry_trains(tmp_path, make_hosts):
    hosts = make_hosts(["h1", "h2", "h3"])
    config = cluster_config(tmp_path / "m", 2, 1, mpi=hosts.mpi_settings([1, 1, 1]))
    write_hours(config, 1, 4000)
    rows = write_hours(config, 1, 400_000, start=H0 + 1)[0]
    assert run_hour(config, H0).returncode == 0
    model_dir = load_config(config).model_dir
    ledger_before = store.StoreLayout(model_dir).ledger.read_bytes()

    job = subprocess.Popen([PYTHON, "-m", "trainer", "run-hour", "--config", str(config),
                            "--hour", hour_str(H0 + 1)], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        for line in job.stdout:  # wait until the hour is under way
            lines.append(line)
            if "worker 0:" in line:
                break
        killed = hosts.kill("h2")  # server 1: every process of its host
        lost_at = time.monotonic()
        lines += job.stdout.readlines()
        job.wait(timeout=LOST_HOST_SECONDS)
        failed_within = time.monotonic() - lost_at
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    output = "".join(lines)
    assert killed and job.returncode != 0, output[-3000:]
    # the one-line reason names the lost host (trainer/hostexec.sh's line, chosen by run-hour)
    assert (f"streamtrain: error: mpiexec exited with code 255: host "
            f"{hosts.host('h2').address} lost: ") in output, output[-3000:]
    assert failed_within < LOST_HOST_SECONDS
    deadline = time.monotonic() + 5  # nothing left on the other hosts
    while (hosts.pids("h1") or hosts.pids("h3")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hosts.pids("h1") == [] and hosts.pids("h3") == []
    assert store.StoreLayout(model_dir).ledger.read_bytes() == ledger_before

    # the retry re-shards: one server (on h1) instead of two
    retry = cluster_config(tmp_path / "m", 1, 1, mpi=hosts.mpi_settings([1, 0, 1]))
    done = run_hour(retry, H0 + 1)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    chain = store.load_chain(model_dir, verify=True)
    assert [v.version for v in chain.versions] == ["v000001", "v000002"]
    assert chain.versions[-1].meta["metrics"]["rows"] == rows
