"""The process-group runner behind the train operator: streams lines, reports failures, kills groups."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from trainer.process import CommandFailed, kill_group, run_streaming, start_group


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie counts as gone
        return f.read().split()[2] != "Z"


def test_streams_lines_and_returns_them():
    seen = []
    lines = run_streaming([sys.executable, "-c", "print('a'); print('[streamtrain] b')"], seen.append)
    assert seen == lines == ["a", "[streamtrain] b"]


def test_failure_names_exit_code_and_last_lines():
    code = "import sys\nfor i in range(50): print('line', i)\nprint('streamtrain: error: boom')\nsys.exit(3)"
    with pytest.raises(CommandFailed) as err:
        run_streaming([sys.executable, "-c", code], lambda _: None)
    msg = str(err.value)
    assert err.value.returncode == 3 and "exited with code 3: streamtrain: error: boom" in msg
    assert "line 49" in msg and "line 5\n" not in msg  # only the tail


def test_a_child_holding_the_pipe_is_read_then_killed(tmp_path, monkeypatch):
    """A launcher that outlives its leader still gets its last line read, but cannot keep the
    caller waiting: once the leader is gone, output is read for a bounded time, then the group
    is killed."""
    monkeypatch.setattr("trainer.process.LEFTOVER_OUTPUT_SECONDS", 1.0)
    pidfile = tmp_path / "pid"
    script = (f"(sleep 0.3; echo late line; sleep 300) & echo $! > {pidfile}; echo leader done")
    started = time.monotonic()
    lines = run_streaming(["bash", "-c", script], lambda _: None)
    assert lines == ["leader done", "late line"]
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    assert not _alive(int(pidfile.read_text()))


def test_kill_group_reaches_grandchildren(tmp_path):
    pidfile = tmp_path / "pids"
    # a leader that starts two children ignoring SIGTERM's default in the shell (like mpiexec ranks)
    script = (f"sleep 300 & echo $! >> {pidfile}; sleep 300 & echo $! >> {pidfile}; wait")
    proc = start_group(["bash", "-c", script])
    for _ in range(100):
        if pidfile.exists() and len(pidfile.read_text().split()) == 2:
            break
        time.sleep(0.05)
    pids = [int(x) for x in pidfile.read_text().split()]
    assert all(_alive(p) for p in pids)
    kill_group(proc, grace_seconds=2)
    time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def test_an_interrupted_wait_kills_the_group(tmp_path):
    """What execution_timeout / SIGTERM do to execute(): the exception kills every rank first."""
    pidfile = tmp_path / "pid"
    script = f"sleep 300 & echo $! > {pidfile}; echo started; wait"

    def boom(line):
        if line == "started":
            raise TimeoutError("execution_timeout")

    with pytest.raises(TimeoutError):
        run_streaming(["bash", "-c", script], boom)
    time.sleep(0.2)
    assert not _alive(int(pidfile.read_text()))


def test_on_kill_from_another_thread_stops_the_job(tmp_path):
    started = []
    timer = threading.Timer(1.0, lambda: kill_group(started[0], grace_seconds=2))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(CommandFailed) as err:
        run_streaming(["bash", "-c", "sleep 300 & sleep 300 & wait"], lambda _: None,
                      on_start=started.append)
    assert time.monotonic() - t0 < 20
    assert err.value.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)
