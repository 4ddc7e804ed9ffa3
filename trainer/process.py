"""Run a command in its own process group, stream its lines, kill the whole group.

Used for the ``mpiexec`` job by ``streamtrain run-hour`` and the Airflow train operator, for the
``streamtrain`` command line by the save/publish operators, and for the Airflow processes the demo
starts.

What reaches what: ``killpg`` reaches ``mpiexec`` and its hydra proxies, but hydra starts each
rank in a session of its own, out of the group's reach. So every link is tied to the one above
it: the command dies with its caller (:func:`die_with_parent`, set here at start), a rank with
its proxy and ``mpiexec`` (the rank's ``PR_SET_PDEATHSIG`` and its watchdog, ``trainer.comm``),
and a rank's collective waits have deadlines: no rank outlives a lost proxy, ``mpiexec`` or caller.
"""
from __future__ import annotations

import collections
import ctypes
import os
import re
import select
import signal
import subprocess
import time
from typing import Callable, Sequence

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
#: Lines of output kept for the error message of a failed command.
TAIL_LINES = 30
#: How long output is still read once the leader has exited: a child that outlives it (a launcher
#: writing its last line) may hold the pipe open, and must not keep the caller waiting for ever.
LEFTOVER_OUTPUT_SECONDS = 5.0
#: How a failure's one-line reason starts: the command line's, and a failing MPI rank's.
ERROR_PREFIXES = ("streamtrain: error:", "[streamtrain] error:")
#: ``trainer/hostexec.sh``'s line for a host whose processes died under the launcher.
_LOST_HOST = re.compile(r"^\[streamtrain\] error: host \S+ lost: ")


class CommandFailed(RuntimeError):
    """A command exited non-zero. ``returncode`` and the last ``lines`` are kept."""

    def __init__(self, argv: Sequence[str], returncode: int, lines: Sequence[str]):
        self.argv, self.returncode, self.lines = list(argv), returncode, list(lines)
        #: lines for the command line to print after its one-line reason (the traceback)
        self.details: list[str] = []
        first = self.first_error
        reason = f": {first}" if first else ""
        tail = "\n".join(self.lines[-TAIL_LINES:])
        super().__init__(
            f"{os.path.basename(self.argv[0])} exited with code {returncode}{reason}\n"
            f"command: {' '.join(self.argv)}\nlast {min(len(self.lines), TAIL_LINES)} lines:\n{tail}"
        )


    @property
    def first_error(self) -> str:
        """The command's one-line reason, or "": a lost host (``trainer/hostexec.sh``'s line),
        else a lost rank (``mpiexec``'s report, :func:`trainer.outcome.lost_rank`: a surviving
        rank's error is only the consequence), else the first line with an error prefix."""
        from trainer.outcome import lost_rank

        errors = [ln for ln in self.lines if ln.startswith(ERROR_PREFIXES)]
        lost_host = next((ln for ln in errors if _LOST_HOST.match(ln)), "")
        return lost_host or lost_rank(self.lines) or (errors[0] if errors else "")

    @property
    def reason(self) -> str:
        """One line: the exit code and the command's own first reason, without its prefix."""
        first = self.first_error
        for prefix in ERROR_PREFIXES:
            if first.startswith(prefix):
                first = first[len(prefix):].strip()
        return (f"{os.path.basename(self.argv[0])} exited with code {self.returncode}"
                + (f": {first}" if first else ""))


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
            if proc.poll() is not None and not group_alive(pgid):
                return
            time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    """Does process group `pgid` still have a member (a zombie counts until it is reaped)?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stat_fields(pid: int) -> list[str]:
    """Fields 3.. of ``/proc/<pid>/stat`` (after the command name), [] if there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return []
    return stat[stat.rfind(")") + 2:].split()  # the name in () may hold spaces


def process_start(pid: int) -> str:
    """When `pid` started (clock ticks since boot), "" if there is no such process: a pid and its
    start time name one process, even after the pid is reused."""
    fields = _stat_fields(pid)
    return fields[19] if fields else ""


def parent_pid(pid: int) -> int:
    """The parent of `pid` (0 if there is no such process)."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else 0


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (``PR_SET_PDEATHSIG``).

    A command started in its own session is out of reach of its caller's process group, so this
    is what ties it to the caller: a killed ``run-hour`` or Airflow task takes its ``mpiexec``
    along, and a killed hydra proxy its ranks.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the ranks' watchdog still ends an orphan


def _die_with_caller() -> None:
    die_with_parent(signal.SIGTERM)  # SIGTERM: mpiexec then takes its proxies and ranks down


def start_group(argv: Sequence[str], *, env: dict | None = None, cwd: str | None = None,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                outlive_caller: bool = False) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new session/process group (``start_new_session=True``)
    that is sent SIGTERM if the calling thread dies (:func:`die_with_parent`), unless
    `outlive_caller` (a service left running on purpose, e.g. ``make ui``'s Airflow)."""
    return subprocess.Popen(
        list(argv), stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
        start_new_session=True, preexec_fn=None if outlive_caller else _die_with_caller, text=True if stdout == subprocess.PIPE else None, bufsize=1
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
        for line in _output_lines(proc):
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
    if group_alive(proc.pid):
        kill_group(proc, grace_seconds=2.0)
    if rc != 0:
        raise CommandFailed(argv, rc, list(lines))
    return list(lines)


def _output_lines(proc: subprocess.Popen):
    """The lines ``proc`` writes to its stdout pipe, until every writer has closed it or
    :data:`LEFTOVER_OUTPUT_SECONDS` after the leader exited, whichever comes first."""
    fd = proc.stdout.fileno()
    pending = b""
    stop_at = None
    while True:
        if stop_at is None and proc.poll() is not None:
            stop_at = time.monotonic() + LEFTOVER_OUTPUT_SECONDS
        wait = 0.5 if stop_at is None else stop_at - time.monotonic()
        if wait <= 0:
            break
        readable, _, _ = select.select([fd], [], [], wait)
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        *complete, pending = (pending + chunk).split(b"\n")
        yield from (line.decode(errors="replace") for line in complete)
    if pending:
        yield pending.decode(errors="replace")
