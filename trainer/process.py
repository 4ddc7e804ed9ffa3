"""Run a command in its own process group, stream its lines, kill the whole group.

Used for the ``mpiexec`` job (launcher, hydra proxies and every rank live in one process group, so
one ``killpg`` reaches them all) by ``streamtrain run-hour`` and the Airflow train operator, for the
``streamtrain`` command line by the save/publish operators, and for the Airflow processes the demo
starts.
"""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
from typing import Callable, Sequence

#: Lines of output kept for the error message of a failed command.
TAIL_LINES = 30
#: How a failure's one-line reason starts: the command line's, and a failing MPI rank's.
ERROR_PREFIXES = ("streamtrain: error:", "[streamtrain] error:")


class CommandFailed(RuntimeError):
    """A command exited non-zero. ``returncode`` and the last ``lines`` are kept."""

    def __init__(self, argv: Sequence[str], returncode: int, lines: Sequence[str]):
        self.argv, self.returncode, self.lines = list(argv), returncode, list(lines)
        first = next((ln for ln in self.lines if ln.startswith(ERROR_PREFIXES)), "")
        reason = f": {first}" if first else ""
        tail = "\n".join(self.lines[-TAIL_LINES:])
        super().__init__(
            f"{os.path.basename(self.argv[0])} exited with code {returncode}{reason}\n"
            f"command: {' '.join(self.argv)}\nlast {min(len(self.lines), TAIL_LINES)} lines:\n{tail}"
        )


def kill_group(proc: subprocess.Popen, grace_seconds: float = 10.0) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL it after ``grace_seconds``.

    Safe to call twice and on a finished process (the group may still hold orphans: they are
    signalled too).
    """
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid  # leader gone; the group id is still its pid
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return  # nobody left in the group
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(pgid):
                return
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_group(argv: Sequence[str], *, env: dict | None = None, cwd: str | None = None,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new session/process group (``start_new_session=True``)."""
    return subprocess.Popen(
        list(argv), stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
        start_new_session=True, text=True if stdout == subprocess.PIPE else None, bufsize=1
        if stdout == subprocess.PIPE else -1,
    )


def run_streaming(argv: Sequence[str], on_line: Callable[[str], None], *, env: dict | None = None,
                  cwd: str | None = None, on_start: Callable[[subprocess.Popen], None] | None = None
                  ) -> list[str]:
    """Run ``argv`` in its own process group, call ``on_line`` for each output line.

    Returns the output lines on exit code 0; raises :class:`CommandFailed` otherwise. Whatever
    interrupts the wait (a timeout, SIGTERM turned into an exception, KeyboardInterrupt) kills the
    whole group before propagating, so no rank outlives the task.
    """
    proc = start_group(argv, env=env, cwd=cwd)
    if on_start is not None:
        on_start(proc)
    lines: collections.deque[str] = collections.deque(maxlen=2000)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            on_line(line)
        rc = proc.wait()
    except BaseException:
        kill_group(proc)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    # the leader exited: anything left in its group is an orphan rank
    if _group_alive(proc.pid):
        kill_group(proc, grace_seconds=2.0)
    if rc != 0:
        raise CommandFailed(argv, rc, list(lines))
    return list(lines)
