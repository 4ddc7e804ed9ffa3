"""Two runs of one hour at once, through the real commands: the staging belongs to one of them.

A ``save`` slowed at its rename (``strace`` delays the syscall) while a second ``run-hour`` of the
hour starts must commit the first run's files with their own ``meta.json``; the second run waits
for the store lock, then finds the hour committed. Two ``run-hour`` of one hour at once: the
second fails at once, naming the first, and the chain verifies.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.support import PYTHON, REPO, streamtrain
from trainer import store
from trainer.config import load_config
from trainer.gendata import generate_hours
from trainer.hours import hour_index, hour_str
from trainer.outcome import REFUSED

pytestmark = pytest.mark.slow

H0 = hour_index("2026-11-26T00")
RENAME_DELAY_US = 5_000_000


def _start(*args: str, prefix: tuple = ()) -> subprocess.Popen:
    return subprocess.Popen([*prefix, PYTHON, "-m", "trainer", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _slowed_save(path, hour) -> subprocess.Popen:
    """``streamtrain save`` whose every rename waits RENAME_DELAY_US before it happens."""
    strace = ("strace", "-f", "-qq", "-o", "/dev/null",
              "-e", f"inject=rename,renameat,renameat2:delay_enter={RENAME_DELAY_US}")
    return _start("save", "--config", str(path), "--hour", hour_str(hour), prefix=strace)


def test_a_second_run_during_a_slowed_save_never_mixes_files(model_config):
    path = model_config()
    cfg = load_config(path)
    generate_hours(cfg, cfg.data_root, H0, 3, 4000, seed=2)
    for hour in (H0, H0 + 1, H0 + 2):  # repeated: each hour once more through the race
        trained = streamtrain("train", "--config", str(path), "--hour", hour_str(hour),
                              mpi_ranks=2)
        assert trained.returncode == 0, trained.stderr
        staged = json.loads((store.StoreLayout(cfg.model_dir).staging_dir(hour)
                             / "meta.json").read_text())
        save = _slowed_save(path, hour)
        time.sleep(1.5)  # the save holds the store lock and waits at its rename
        second = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(hour))
        out, err = save.communicate(timeout=120)
        assert save.returncode == 0, err
        assert second.returncode == 0, second.stderr
        assert "already in chain" in second.stdout  # it waited for the commit, then skipped
        version = store.read_state(store.StoreLayout(cfg.model_dir)).by_hour[hour]
        committed = store.read_version_meta(cfg.model_dir, version)
        assert committed["claim"] == staged["claim"]  # the first run's own files and meta.json
    verified = streamtrain("chain", "--config", str(path), "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "chain verified: 3 version(s)" in verified.stdout


def test_two_runs_of_one_hour_the_second_fails_at_once(model_config):
    path = model_config(workers=1)
    cfg = load_config(path)
    generate_hours(cfg, cfg.data_root, H0, 1, 60000, seed=3)
    first = _start("run-hour", "--config", str(path), "--hour", hour_str(H0))
    for line in first.stdout:  # the first job is training
        if "training as" in line:
            break
    started = time.monotonic()
    second = streamtrain("run-hour", "--config", str(path), "--hour", hour_str(H0), timeout=60)
    assert second.returncode == REFUSED, second.stderr
    assert time.monotonic() - started < 20
    assert "is being run by another job" in second.stderr and f"pid {first.pid}" in second.stderr
    first.stdout.read()
    assert first.wait(timeout=300) == 0, first.stderr.read()
    layout = store.StoreLayout(cfg.model_dir)
    assert list(layout.staging.iterdir()) == []  # committed: no staging, no claim left
    verified = streamtrain("chain", "--config", str(path), "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
