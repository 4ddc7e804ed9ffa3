"""Who owns the staging of an hour: one claim file ``staging/<hour_str>.claim`` per hour.

Two runs of one hour at once (a ``run-hour`` by hand beside the Airflow run, a cleared task racing
its retry, two schedulers) must never mix their files: ``save`` would pair the ledger line with
another run's ``meta.json``. So the staging of an hour belongs to one run at a time::

    claim = take_claim(model_dir, hour)        # rank 0 at job start (or run-hour), store lock held
    ... the job trains; the servers check_claim() before they write; meta.json records the token
    save(model_dir, hour)                      # under the store lock: claim token == meta token,
                                               # then rename, then the claim is released

A claim is honoured while its holder lives (same host: the pid with its start time; another host:
until the staging it made is complete). A claim whose holder is gone is taken over; a run that
finds a live claim of another run fails at once with :class:`StagingClaimedError`. Taking a claim
over removes the staging its gone holder left (a killed job's files would keep a full disk full;
a staged version whose save never came is retrained by the run taking over). The claim of a
finished job stays until its ``save`` commits it, so the save checks it still owns the staging.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from dataclasses import asdict, dataclass

from trainer.process import process_start

from .errors import RefusedError, StoreError
from .durable import write_file_durable
from .layout import META, StoreLayout, hour_str, store_lock, utc_now


class StagingClaimedError(RefusedError):
    """Another live run owns the staging of the hour (or took it over since it was staged)."""


@dataclass(frozen=True)
class Claim:
    """One run's claim on ``staging/<hour>``: a token written into the staged ``meta.json``."""

    hour: int
    token: str
    pid: int
    host: str
    pid_started: str  # the holder's start time (/proc/<pid>/stat field 22): a reused pid differs
    claimed_at: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, claimed at {self.claimed_at}"


def claim_path(layout: StoreLayout, hour: int):
    return layout.staging / f"{hour_str(hour)}.claim"


def read_claim(layout: StoreLayout, hour: int) -> Claim | None:
    """The claim on `hour`'s staging, or None. An unreadable claim file is an error naming it."""
    path = claim_path(layout, hour)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StoreError(f"cannot read the staging claim {path}: {e}") from e
    try:
        return Claim(**json.loads(raw))
    except (ValueError, TypeError) as e:
        raise StoreError(f"{path}: not a staging claim ({e}); remove it if no run of "
                         f"{hour_str(hour)} is active") from None


def _staged_token(layout: StoreLayout, hour: int) -> str | None:
    """The claim token in the complete staging of `hour` (None: incomplete or absent)."""
    try:
        return json.loads((layout.staging_dir(hour) / META).read_bytes()).get("claim")
    except (OSError, ValueError, AttributeError):
        return None


def holder_alive(layout: StoreLayout, claim: Claim) -> bool:
    """Is the run that holds `claim` still running (so its staging may still change)?"""
    if claim.host == socket.gethostname():
        return process_start(claim.pid) == claim.pid_started
    return _staged_token(layout, claim.hour) != claim.token  # another host: live until staged


def take_claim(model_dir, hour: int, *, token: str | None = None) -> Claim:
    """Claim the staging of `hour` for this process, under the store lock.

    With `token` (a claim this run's launcher took, e.g. ``run-hour``), adopt it: it must still be
    the current claim. Raises :class:`StagingClaimedError` when another live run holds the claim.
    """
    layout = StoreLayout(model_dir)
    try:
        return _take_claim(layout, hour, token)
    except OSError as e:  # the first write of a run: a read-only store fails here, in seconds
        raise StoreError(f"model_dir {layout.root} is not writable: {e}") from e


def _take_claim(layout: StoreLayout, hour: int, token: str | None) -> Claim:
    layout.ensure()
    with store_lock(layout):
        current = read_claim(layout, hour)
        if token is not None:
            if current is None or current.token != token:
                raise StagingClaimedError(
                    f"hour {hour_str(hour)}: the staging claim {token} given to this job is not "
                    f"the current one ({current.describe() if current else 'none'})")
            return current
        if current is not None and holder_alive(layout, current):
            raise StagingClaimedError(
                f"hour {hour_str(hour)} is being run by another job ({current.describe()}; "
                f"{claim_path(layout, hour)}): only one run of an hour at a time. Wait for it, or "
                f"if that job is gone for good, remove the claim file")
        if current is not None:  # its holder is gone: a failed (killed) run, or a staged one
            shutil.rmtree(layout.staging_dir(hour), ignore_errors=True)  # whose save never came
        me = os.getpid()
        claim = Claim(hour=int(hour), token=uuid.uuid4().hex, pid=me, host=socket.gethostname(),
                      pid_started=process_start(me), claimed_at=utc_now())
        write_file_durable(claim_path(layout, hour), json.dumps(asdict(claim)).encode())
        return claim


def check_claim(model_dir, hour: int, token: str) -> None:
    """Raise :class:`StagingClaimedError` unless `token` is still the claim on `hour`'s staging
    (a server rank checks this before it writes into the staging folder)."""
    layout = StoreLayout(model_dir)
    current = read_claim(layout, hour)
    if current is None or current.token != token:
        raise StagingClaimedError(
            f"hour {hour_str(hour)}: this job's staging claim was taken over by another run "
            f"({current.describe() if current else 'no claim left'}): not writing its staging")


def release_claim_locked(layout: StoreLayout, hour: int, token: str | None = None) -> bool:
    """Remove the claim on `hour` (only if it is `token`'s, when given). Store lock held."""
    current = read_claim(layout, hour)
    if current is None or (token is not None and current.token != token):
        return False
    claim_path(layout, hour).unlink()
    return True


def release_claim(model_dir, hour: int, token: str, *, clean_staging: bool = False) -> bool:
    """Give up `token`'s claim on `hour` (a failed or skipped run), removing the staging it wrote
    when `clean_staging` (a failed run's files would fill the disk). Never touches a claim or a
    staging folder of another run; returns whether the claim was released."""
    layout = StoreLayout(model_dir)
    with store_lock(layout):
        current = read_claim(layout, hour)
        if current is None or current.token != token:
            return False
        if clean_staging:
            shutil.rmtree(layout.staging_dir(hour), ignore_errors=True)
        return release_claim_locked(layout, hour, token)


def staged_claim_problem(layout: StoreLayout, hour: int, meta: dict) -> str:
    """Why the staged `meta` may not be committed for lack of its claim ("" if it may).
    Store lock held: no run can take the claim over between this check and the rename."""
    current = read_claim(layout, hour)
    token = meta.get("claim")
    if token is None:
        return ""  # staged before claims existed
    if current is None:
        return f"its staging claim {token} is gone (another run took the hour over and gave it up)"
    if current.token != token:
        return (f"the staging belongs to another run now ({current.describe()}): it took the hour "
                f"over since this was staged; its own save commits it")
    return ""
