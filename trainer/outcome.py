"""How a command ends: its exit code (listed in ``docs/exit-codes.md``) and the job's result line.

``run-hour`` passes the job's code through, so a wrapper can tell bad data from a busy hour from
any other failure. The Airflow operators fail at once (no retry) on bad input and retry the rest.

The training job ends with one structured line, ``[streamtrain] result {json}``, whose ``status``
is ``"staged"`` (a version waits for ``save``: ``kind``, ``parent`` and the metrics), ``"skipped"``
(nothing to do: ``reason`` is ``"committed"`` or ``"pruned"``, ``version`` holds the hour) or
``"empty"`` (the hour had no rows and is recorded empty). The operators read this line, never
the log text around it. Its JSON is strict: no ``NaN`` token (``null`` instead).
"""
from __future__ import annotations

import json

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
