"""MPI plumbing shared by servers and workers: roles, message tags, packing, the waiting helper,
and the watchdog.

Why a waiting helper: with MPICH every blocking wait (``Recv``, ``Probe``, ``Wait``) busy-polls a
whole core. On a 2-core machine running 1 server + 2 workers that halves throughput. Every wait
here polls a few times, then sleeps with exponential backoff (tens of microseconds doubling to a
cap), and gives up after a timeout naming what it waited for — a dead peer is an error, not a hang.
Barriers are non-blocking ones polled the same way.

Why a watchdog: a collective that carries objects (``bcast``, ``gather``) or a reduction blocks
inside MPI, where no Python timeout applies, and a rank whose launcher died (a killed
``hydra_pmi_proxy`` or ``mpiexec``) is not told: it is reparented and spins forever. The
:class:`Watchdog` thread of every rank aborts the job when one collective outlasts the timeout,
and ends the rank at once when its launcher (parent or grandparent process) is gone; the kernel
kills a rank whose parent dies too (``PR_SET_PDEATHSIG``).
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from trainer.process import die_with_parent, parent_pid, process_start

# Message tags (worker -> server requests, server -> worker replies).
TAG_PULL = 11  # uint8 packet: header, keys, slots -> reply TAG_PULL_REPLY
TAG_PUSH = 12  # uint8 packet: header, keys, slots, shows, clicks, grads, dense grad -> TAG_PUSH_ACK
TAG_DONE = 13  # a worker has no more requests for this server
TAG_PULL_REPLY = 21  # float32: rows [n, 1+dim] then (if asked) the server's dense slice
TAG_PUSH_ACK = 22  # int64 [created, filtered, updated]


class JobError(RuntimeError):
    """A rank of the job failed; the message names rank, host and cause."""


@dataclass(frozen=True)
class Roles:
    """Ranks ``0..servers-1`` host table shards; the rest are workers. Rank 0 coordinates."""

    rank: int
    size: int
    servers: int

    @classmethod
    def decide(cls, comm: MPI.Comm, servers: int) -> "Roles":
        if comm.size < servers + 1:
            raise JobError(f"need at least {servers + 1} ranks ({servers} server(s) + 1 worker), "
                           f"got {comm.size}")
        return cls(rank=comm.rank, size=comm.size, servers=servers)

    @property
    def workers(self) -> int:
        return self.size - self.servers

    @property
    def is_server(self) -> bool:
        return self.rank < self.servers

    @property
    def worker_index(self) -> int:
        return self.rank - self.servers

    def server_ranks(self) -> range:
        return range(self.servers)

    def worker_ranks(self) -> range:
        return range(self.servers, self.size)


@dataclass(frozen=True)
class Backoff:
    """How a rank waits: `spins` polls, then sleeps from `min_us` doubling to `max_us`."""

    spins: int = 50
    min_us: float = 20.0
    max_us: float = 500.0
    timeout_s: float = 600.0

    def wait(self, ready, what: str):
        """Call ``ready()`` until it returns something not None; return that value."""
        for _ in range(self.spins):
            value = ready()
            if value is not None:
                return value
        delay = self.min_us * 1e-6
        deadline = time.monotonic() + self.timeout_s
        while True:
            value = ready()
            if value is not None:
                return value
            if time.monotonic() > deadline:
                raise JobError(f"rank {MPI.COMM_WORLD.rank} on {socket.gethostname()}: "
                               f"waited {self.timeout_s:.0f}s for {what}")
            time.sleep(delay)
            delay = min(delay * 2, self.max_us * 1e-6)

    def probe(self, comm: MPI.Comm, source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG,
              what: str = "a message") -> MPI.Status:
        status = MPI.Status()
        return self.wait(lambda: status if comm.Iprobe(source, tag, status) else None, what)

    def complete(self, request: MPI.Request, what: str) -> None:
        self.wait(lambda: True if request.Test() else None, what)

    def barrier(self, comm: MPI.Comm, what: str) -> None:
        """``comm.Barrier()`` with this helper's deadline (an ``Ibarrier`` polled, no spinning)."""
        self.complete(comm.Ibarrier(), what)


#: How often the watchdog looks at the clock and at the launcher (seconds).
WATCH_SECONDS = 0.5


def under_launcher() -> bool:
    """Is this process a rank started by ``mpiexec`` (hydra's PMI environment)?"""
    return "PMI_FD" in os.environ or "PMI_PORT" in os.environ


class Watchdog:
    """One daemon thread per rank: deadlines for collectives, and an end for orphans.

    ``with watchdog.waiting("the metrics reduction"): comm.Reduce(...)`` aborts the whole job
    (``MPI_Abort``) if the block lasts longer than `timeout_s`, naming the wait. When `watch_launcher`
    (a rank under ``mpiexec``), the rank ends itself (exit code 1) as soon as its parent (the hydra
    proxy) or grandparent (``mpiexec``, or ``sshd`` on another host) is gone.
    """

    def __init__(self, comm: MPI.Comm, timeout_s: float, watch_launcher: bool = True):
        self.comm = comm
        self.timeout_s = float(timeout_s)
        self._what: str | None = None
        self._until = 0.0
        self._stop = threading.Event()
        self._lineage = self._launcher_lineage() if watch_launcher else []
        if watch_launcher:
            die_with_parent()
            if self._launcher_gone():  # the parent died before prctl took effect
                self._orphaned()
        self._thread = threading.Thread(target=self._watch, name="streamtrain-watchdog",
                                        daemon=True)
        self._thread.start()

    @staticmethod
    def _launcher_lineage() -> list[tuple[int, str]]:
        parent = os.getppid()
        lineage = [(parent, process_start(parent))]
        grandparent = parent_pid(parent)
        if grandparent > 1:
            lineage.append((grandparent, process_start(grandparent)))
        return lineage

    def _launcher_gone(self) -> bool:
        if self._lineage and os.getppid() != self._lineage[0][0]:
            return True  # reparented: the proxy is gone
        return any(process_start(pid) != ticks for pid, ticks in self._lineage)

    @contextmanager
    def waiting(self, what: str):
        """Run the block under this watchdog's deadline (one collective, or a few)."""
        self._what, self._until = what, time.monotonic() + self.timeout_s
        try:
            yield
        finally:
            self._what = None

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            if self._lineage and self._launcher_gone():
                self._orphaned()
            what = self._what
            if what is not None and time.monotonic() > self._until:
                fail_job(self.comm, JobError(f"rank {self.comm.rank} on {socket.gethostname()}: "
                                             f"waited {self.timeout_s:.0f}s for {what}"))

    def _orphaned(self) -> None:
        launcher = ", ".join(str(pid) for pid, _ in self._lineage)
        sys.stderr.write(f"[streamtrain] error: rank {self.comm.rank} on {socket.gethostname()} "
                         f"(pid {os.getpid()}): its launcher (pid {launcher}) is gone; exiting\n")
        sys.stderr.flush()
        os._exit(1)


def recv_bytes(comm: MPI.Comm, status: MPI.Status) -> np.ndarray:
    """Receive the message `status` describes into a fresh uint8 buffer."""
    buf = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
    comm.Recv([buf, MPI.BYTE], source=status.Get_source(), tag=status.Get_tag())
    return buf


def pack(*arrays: np.ndarray) -> np.ndarray:
    """Concatenate arrays' bytes into one uint8 packet, prefixed by each array's byte length."""
    parts = [np.ascontiguousarray(a).view(np.uint8).reshape(-1) for a in arrays]
    header = np.array([len(parts)] + [p.size for p in parts], dtype=np.int64).view(np.uint8)
    return np.concatenate([header, *parts])


def unpack(packet: np.ndarray, *dtypes) -> list[np.ndarray]:
    """Inverse of :func:`pack`: views (no copies) of the arrays, given their dtypes in order."""
    count = int(packet[:8].view(np.int64)[0])
    if count != len(dtypes):
        raise JobError(f"malformed packet: {count} arrays, expected {len(dtypes)}")
    sizes = packet[8:8 * (count + 1)].view(np.int64)
    out, offset = [], 8 * (count + 1)
    for size, dtype in zip(sizes, dtypes):
        out.append(packet[offset:offset + size].view(dtype))
        offset += int(size)
    return out


def fail_job(comm: MPI.Comm, err: BaseException, exit_code: int = 1) -> None:
    """Print rank, host and cause (one line; then the traceback of an unexpected error, exit code
    1) to stderr, then abort every rank of the job with `exit_code` (``mpiexec`` exits with it).

    MPICH's ``MPI_Abort`` prints a line of its own ("Abort(1) on node 1 ... application called
    MPI_Abort") that repeats nothing useful: this rank's stderr goes to /dev/null just before."""
    where = f"rank {comm.rank}/{comm.size} on {socket.gethostname()} (pid {os.getpid()})"
    sys.stderr.write(f"[streamtrain] error: {where}: {type(err).__name__}: {one_line(err)}\n")
    if exit_code == 1 or os.environ.get("STREAMTRAIN_TRACEBACK"):
        sys.stderr.write("".join(traceback.format_exception(err)))
    sys.stderr.flush()
    sys.stdout.flush()
    time.sleep(0.5)  # let mpiexec's proxy forward these lines before Abort tears the job down
    _silence_stderr()
    comm.Abort(exit_code)


def one_line(err: BaseException) -> str:
    """`err`'s message on one line: an MPI error's stack keeps its first and last lines.

    >>> one_line(RuntimeError("Other MPI error, error stack:\\nMPI_Test(...) failed\\n"
    ...                       "copy_iovs(224)....: process_vm_readv failed (errno 3)"))
    'Other MPI error, error stack: ... copy_iovs(224)....: process_vm_readv failed (errno 3)'
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip(" .:")]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} ... {lines[-1]}"


def _silence_stderr() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    except OSError:
        pass  # MPI's own line then shows; nothing is lost
