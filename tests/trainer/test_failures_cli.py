"""How a failing hour reads and what it leaves, through the real commands (real mpiexec, generated
data): the cause once (one ``streamtrain: error:`` line first, one traceback), a lost rank named,
paths in OS errors, the preflight of ``model_dir``, no staging left behind.

A read-only ``model_dir`` and a small disk are real mounts in a private mount namespace
(``unshare -rm``: a user namespace, so no root is needed), the full disk of the ledger append a
real ENOSPC injected by ``strace``.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import PYTHON, REPO, streamtrain, use_failing_network
from trainer import store
from trainer.config import load_config
from trainer.gendata import generate_hours
from trainer.hours import hour_index, hour_str
from trainer.process import parent_pid

pytestmark = pytest.mark.slow

H0 = hour_index("2026-11-26T03")


def _hour_data(model_config, rows=2000, hours=1, **kw):
    path = model_config(**kw)
    cfg = load_config(path)
    generate_hours(cfg, cfg.data_root, H0, hours, rows, seed=21)
    return path, cfg


def test_a_failing_rank_prints_its_cause_once(model_config, tmp_path):
    path, cfg = _hour_data(model_config, rows=4000, workers=2)
    use_failing_network(path, tmp_path, "raise@1")
    proc = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(H0))
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.splitlines()
    assert err[0].startswith("streamtrain: error: mpiexec exited with code 1: rank 1/3 on ")
    assert err[0].endswith("RuntimeError: injected fault (raise@1)")
    assert err[1] == "Traceback (most recent call last):"  # the failing rank's, right after
    assert err[-1] == "RuntimeError: injected fault (raise@1)"
    both = proc.stdout + proc.stderr
    # one traceback on stderr (JAX's error text quotes the callback's inside its message line)
    assert sum(line.startswith("Traceback") for line in err) == 1
    assert proc.stderr.count("injected fault (raise@1)") == 2
    # on stdout only JAX's own report of the failed callback (logged by the rank's JAX, the
    # fault's injection, not by streamtrain)
    out = proc.stdout.splitlines()
    assert [i for i, line in enumerate(out) if line.startswith("Traceback")] == \
        [out.index("jax.debug.callback failed") + 1]
    assert "streamtrain: error:" not in proc.stdout and "error:" not in "\n".join(err[1:])
    assert "MPI_Abort" not in both  # MPICH's own abort line is silenced
    assert "training as full" in proc.stdout  # the progress lines stay on stdout
    assert list(store.StoreLayout(cfg.model_dir).staging.iterdir()) == []


def _children(pid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and parent_pid(int(p)) == pid]


def _rank_pid(proxy: int, rank: int) -> int:
    for pid in _children(proxy):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"PMI_RANK={rank}".encode() in environ:
            return pid
    raise AssertionError(f"no rank {rank} under proxy {proxy}")


def test_a_lost_server_rank_is_named_not_the_surviving_worker(model_config):
    path, cfg = _hour_data(model_config, rows=150000)
    run = subprocess.Popen([PYTHON, "-m", "trainer", "run-hour", "--config", str(path),
                            "--hour", hour_str(H0)], cwd=REPO, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in run.stdout:
        if line.startswith("[streamtrain] worker 0:"):  # training: pulls and pushes under way
            break
    (mpiexec,) = _children(run.pid)
    (proxy,) = _children(mpiexec)
    server = _rank_pid(proxy, 0)
    os.kill(server, signal.SIGKILL)
    run.stdout.read()
    assert run.wait(timeout=cfg.mpi.timeout_seconds) == signal.SIGKILL  # mpiexec's code, through
    first = run.stderr.read().splitlines()[0]
    assert first.startswith("streamtrain: error: mpiexec exited with code 9: ")
    assert "rank 0/2 (server) on " in first, first
    assert first.endswith(f"(pid {server}) was lost: Killed (signal 9)"), first
    layout = store.StoreLayout(cfg.model_dir)
    assert not layout.ledger.exists() and list(layout.staging.iterdir()) == []


def test_a_full_disk_during_the_ledger_append_names_the_ledger(model_config):
    path, cfg = _hour_data(model_config)
    trained = streamtrain("train", "--config", str(path), "--hour", hour_str(H0), mpi_ranks=2)
    assert trained.returncode == 0, trained.stderr
    layout = store.StoreLayout(cfg.model_dir)
    full = ("strace", "-f", "-qq", "-o", "/dev/null", "-P", str(layout.ledger),
            "-e", "trace=write", "-e", "inject=write:error=ENOSPC")
    saved = subprocess.run([*full, PYTHON, "-m", "trainer", "save", "--config", str(path),
                            "--hour", hour_str(H0)], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert saved.returncode == 1
    assert saved.stderr.splitlines() == [
        f"streamtrain: error: [Errno 28] No space left on device: '{layout.ledger}'"]
    assert store.read_state(layout).versions == {}  # nothing committed
    again = streamtrain("save", "--config", str(path), "--hour", hour_str(H0))
    assert again.returncode == 0 and "as v000001" in again.stdout, again.stderr
    assert streamtrain("chain", "--config", str(path), "--verify").returncode == 0


def _in_private_mounts(script: str, cfg, path, timeout=300, **env) -> subprocess.CompletedProcess:
    """Run `script` (sh) as root of a user + mount namespace of its own, where it may mount."""
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"no private mount namespace here (unshare -rm: {probe.stderr.strip()})")
    Path(cfg.model_dir).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MODEL": cfg.model_dir, "CFG": str(path), "PY": PYTHON,
           "MPIEXEC": str(Path(PYTHON).parent / "mpiexec"), **env}
    return subprocess.run(["unshare", "-rm", "sh", "-ec", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_a_read_only_model_dir_fails_before_anything_runs(model_config):
    path, cfg = _hour_data(model_config, hours=2)
    assert streamtrain("run-hour", "--config", str(path), "--hour", hour_str(H0)).returncode == 0
    proc = _in_private_mounts('''
        mount --bind "$MODEL" "$MODEL" && mount -o remount,bind,ro "$MODEL"
        exec "$PY" -m trainer run-hour --config "$CFG" --hour "$HOUR"
    ''', cfg, path, HOUR=hour_str(H0 + 1))
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"streamtrain: error: model_dir {cfg.model_dir} is not writable: "
                           "[Errno 30] Read-only file system: "), line
    assert "running:" not in proc.stdout  # found before mpiexec starts


def test_too_little_free_disk_fails_before_training(model_config):
    path, cfg = _hour_data(model_config)
    proc = _in_private_mounts('''
        mount -t tmpfs -o size=16m tmpfs "$MODEL"
        set +e
        "$PY" -m trainer run-hour --config "$CFG" --hour "$HOUR"
        echo "exit $?"
        ls -A "$MODEL/staging"
    ''', cfg, path, HOUR=hour_str(H0))
    out = proc.stdout.splitlines()
    assert "exit 1" in out, proc.stdout + proc.stderr
    assert out[-1] == "exit 1"  # and nothing staged, no claim left
    first = proc.stderr.splitlines()[0]
    assert first.startswith("streamtrain: error: mpiexec exited with code 1: rank 0/2 ")
    assert f"StoreError: model_dir {cfg.model_dir}: " in first and "bytes free on its disk, a " \
        "full version needs about 67,108,864" in first, first
    assert not any("training as" in line for line in out)


def test_a_gone_runs_staging_is_freed_when_the_hour_is_taken_over(model_config):
    """A job that died leaves its staging and claim; the next run of the hour takes the claim
    over and frees that space before its preflight, on a disk it would otherwise not fit."""
    path, cfg = _hour_data(model_config)
    proc = _in_private_mounts('''
        mount -t tmpfs -o size=100m tmpfs "$MODEL"
        "$MPIEXEC" -n 2 "$PY" -m trainer train --config "$CFG" --hour "$HOUR" > /dev/null
        head -c 50000000 /dev/zero > "$MODEL/staging/$HOUR/.shard-00000.parquet.tmp-1-1"
        set +e
        "$PY" -m trainer run-hour --config "$CFG" --hour "$HOUR"
        echo "exit $?"
        ls -A "$MODEL/staging"
        "$PY" -m trainer chain --config "$CFG" --verify
    ''', cfg, path, HOUR=hour_str(H0))
    out = proc.stdout.splitlines()
    assert "exit 0" in out, proc.stdout[-3000:] + proc.stderr
    assert out[out.index("exit 0") + 1].startswith("version ")  # staging empty: the chain next
    assert "chain verified: 1 version(s)" in proc.stdout
