"""How a command ends: its exit code (listed in ``docs/design.md``, "Exit codes") and the job's
result line.

``run-hour`` passes the job's code through, so a wrapper can tell bad data from a busy hour from
any other failure. The Airflow operators fail at once (no retry) on bad input and retry the rest.

The training job ends with one structured line, ``[streamtrain] result {json}``, whose ``status``
is ``"staged"`` (a version waits for ``save``: ``kind``, ``parent`` and the metrics), ``"skipped"``
(nothing to do: ``reason`` is ``"committed"`` or ``"pruned"``, ``version`` holds the hour) or
``"empty"`` (the hour had no rows and is recorded empty). The operators read this line, never
the log text around it. Its JSON is strict: no ``NaN`` token (``null`` instead).

At its start the job prints which process each rank is (:func:`ranks_line`), so that when a rank
is lost (killed, out of memory) and ``mpiexec`` reports only the pid of a "BAD TERMINATION",
:func:`lost_rank` names the rank, and the one-line reason blames it, not the surviving rank that
failed next to talk to it.
"""
from __future__ import annotations

import json
import re

#: The job's last line starts with this; the rest is one JSON object.
RESULT_PREFIX = "[streamtrain] result "
#: What ``status`` of a result line can be.
RESULT_STATUSES = ("staged", "skipped", "empty")

#: Done: trained and staged, committed, or nothing to do (already committed, recorded empty).
OK = 0
#: Any other failure (a crashed rank, a timeout, a corrupt store, a full disk...).
FAILURE = 1
#: The command line itself is wrong (unknown option, bad hour); from argparse.
USAGE = 2
#: Bad input data (missing column, wrong type, bad row with ``bad_rows = "fail"``): fix the data.
BAD_INPUT = 3
#: The hour may not run now, nothing was changed: an earlier hour is unsettled (the order rule)
#: or another run owns the hour's staging. Retry once that is settled.
REFUSED = 4
#: Interrupted (Ctrl-C).
INTERRUPTED = 130


def exit_code_of(err: BaseException) -> int:
    """The exit code a failure with `err` ends with."""
    from trainer.partition import InputError
    from trainer.store.errors import RefusedError

    if isinstance(err, InputError):
        return BAD_INPUT
    if isinstance(err, RefusedError):
        return REFUSED
    if isinstance(err, KeyboardInterrupt):
        return INTERRUPTED
    return FAILURE


def result_line(outcome: dict) -> str:
    """The result line of `outcome` (strict JSON, keys sorted)."""
    from trainer.jsonsafe import strict_dumps

    if outcome.get("status") not in RESULT_STATUSES:
        raise ValueError(f"result status must be one of {RESULT_STATUSES}, got {outcome!r}")
    return RESULT_PREFIX + strict_dumps(outcome, sort_keys=True)


def parse_result(lines) -> dict | None:
    """The job's result (the last result line of `lines`), or None if it printed none."""
    for line in reversed(list(lines)):
        if line.startswith(RESULT_PREFIX):
            outcome = json.loads(line[len(RESULT_PREFIX):])
            if outcome.get("status") not in RESULT_STATUSES:
                raise ValueError(f"result line with an unknown status: {line}")
            return outcome
    return None


#: The job's line that lists its ranks: ``[streamtrain] ranks: 0 server pid 811 on vm, ...``.
RANKS_PREFIX = "[streamtrain] ranks: "
_RANK = re.compile(r"(\d+) (server|worker) pid (\d+) on ([^\s,]+)")
#: ``mpiexec`` (hydra)'s report of a process that ended without the job aborting.
_TERMINATED_PID = re.compile(r"^=\s+PID (\d+) RUNNING AT (\S+)")
_TERMINATED_HOW = re.compile(r"^YOUR APPLICATION TERMINATED WITH THE EXIT STRING: (.+)$")
_MPIEXEC_REPORT = re.compile(r"^(=|YOUR APPLICATION TERMINATED |This typically refers to a "
                             r"problem with your application|Please see the FAQ page)")


def is_mpiexec_report(line: str) -> bool:
    """Is `line` part of ``mpiexec``'s "BAD TERMINATION" banner (what :func:`lost_rank` reads)?"""
    return bool(_MPIEXEC_REPORT.match(line))


def ranks_line(ranks) -> str:
    """The line naming each rank: `ranks` = ``[(role, pid, host), ...]`` in rank order.

    >>> ranks_line([("server", 811, "vm"), ("worker", 812, "vm")])
    '[streamtrain] ranks: 0 server pid 811 on vm, 1 worker pid 812 on vm'
    """
    return RANKS_PREFIX + ", ".join(f"{rank} {role} pid {pid} on {host}"
                                    for rank, (role, pid, host) in enumerate(ranks))


def lost_rank(lines) -> str:
    """One line naming the process ``mpiexec`` reports terminated ("" if it reports none), with
    its rank and role when the job's :func:`ranks_line` lists its pid.

    >>> lost_rank([ranks_line([("server", 811, "vm"), ("worker", 812, "vm")]), "",
    ...            "=   PID 811 RUNNING AT vm", "=   EXIT CODE: 9",
    ...            "YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)"])
    'rank 0/2 (server) on vm (pid 811) was lost: Killed (signal 9)'
    """
    lines = list(lines)
    ranks: dict[tuple[str, str], tuple[str, str]] = {}
    size = 0
    for line in lines:
        if line.startswith(RANKS_PREFIX):
            found = _RANK.findall(line[len(RANKS_PREFIX):])
            ranks = {(host, pid): (rank, role) for rank, role, pid, host in found}
            size = len(found)
            break
    for i, line in enumerate(lines):
        match = _TERMINATED_PID.match(line)
        if not match:
            continue
        pid, host = match.groups()
        how = next((m.group(1) for m in map(_TERMINATED_HOW.match, lines[i:]) if m),
                   "ended without the job aborting")
        if (host, pid) in ranks:
            rank, role = ranks[(host, pid)]
            return f"rank {rank}/{size} ({role}) on {host} (pid {pid}) was lost: {how}"
        return f"process {pid} on {host} was lost: {how}"
    return ""
