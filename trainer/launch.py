"""The ``mpiexec`` command line for one hour: the only place it is built.

``streamtrain run-hour`` and the Airflow train operator both call :func:`mpiexec_command`. The
``[mpi]`` section decides where the ranks run: this machine, ``hosts`` (with ``ranks_per_host``)
or a ``hostfile``, started through a ``launcher`` (ssh by default) over the network interface
``iface``; see ``docs/cluster.md``. Ranks fill the hosts in order, so the servers (ranks
``0..servers-1``) take the first slots.

Remote hosts started through ssh or rsh go through ``trainer/hostexec.sh``, which runs the real
launcher and, when a host's processes die under it mid-job, prints the one line that names the lost
host (mpiexec itself only says that a proxy's socket closed).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from trainer.config import ConfigError, ModelConfig, MpiConfig
from trainer.hours import hour_str
from trainer.outcome import is_mpiexec_report
from trainer.process import ERROR_PREFIXES, CommandFailed, run_streaming

#: The launcher wrapper that names a lost host (runs ``$STREAMTRAIN_LAUNCHER_EXEC``, default ssh).
HOSTEXEC = Path(__file__).with_name("hostexec.sh")


def mpiexec_path(cfg: ModelConfig) -> str:
    """The configured mpiexec, or the one installed beside this Python (the venv's MPICH)."""
    if cfg.mpi.mpiexec:
        found = shutil.which(cfg.mpi.mpiexec)
        if not found:
            raise ConfigError(f"mpi.mpiexec: {cfg.mpi.mpiexec!r} is not an executable")
        return found
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec")
    if not found:
        raise ConfigError("mpi.mpiexec: no mpiexec beside this Python nor on PATH; "
                          "install the project (pip install -e .) or set mpi.mpiexec")
    return found


def mpiexec_command(cfg: ModelConfig, hour: int, force: bool = False,
                    run_info: dict | None = None, claim: str | None = None) -> list[str]:
    """``mpiexec -n servers+workers python -m trainer train --config C --hour H``.

    >>> from trainer.config import load_config
    >>> from trainer.hours import hour_index
    >>> cmd = mpiexec_command(load_config("examples/demo.toml"), hour_index("2026-11-25T13"))
    >>> cmd[1:3], cmd[-2:]
    (['-n', '3'], ['--hour', '2026-11-25T13'])
    """
    command = [mpiexec_path(cfg), "-n", str(cfg.mpi.world_size), *placement_args(cfg.mpi)]
    for name, value in sorted(cfg.mpi.env.items()):
        command += ["-genv", name, value]
    command += list(cfg.mpi.extra_args)
    command += [sys.executable, "-m", "trainer", "train", "--config", cfg.path,
                "--hour", hour_str(hour)]
    if force:
        command.append("--force")
    if run_info:  # recorded in the version's meta.json (e.g. which Airflow run made it)
        command += ["--run-info", json.dumps(run_info, sort_keys=True)]
    if claim:  # the launcher's claim on the hour's staging, adopted by the job
        command += ["--claim", claim]
    return command


def placement_args(mpi: MpiConfig) -> list[str]:
    """The ``mpiexec`` arguments that place the ranks on hosts and start them there.

    >>> from trainer.config import MpiConfig
    >>> placement_args(MpiConfig(servers=2, workers=2, hosts=("a", "b", "c"),
    ...                          ranks_per_host=(1, 1, 2), iface="eth0"))[:2]
    ['-hosts', 'a:1,b:1,c:2']
    >>> placement_args(MpiConfig())
    []
    """
    args: list[str] = []
    if mpi.hosts:
        counts = mpi.ranks_per_host or (1,) * len(mpi.hosts)
        args += ["-hosts", ",".join(f"{h}:{n}" for h, n in zip(mpi.hosts, counts))]
    elif mpi.hostfile:
        if not os.path.exists(mpi.hostfile):
            raise ConfigError(f"mpi.hostfile: {mpi.hostfile} does not exist")
        args += ["-f", mpi.hostfile]
    if mpi.launcher:
        args += ["-launcher", mpi.launcher]
    if mpi.launcher_exec:
        found = shutil.which(mpi.launcher_exec)
        if not found:
            raise ConfigError(f"mpi.launcher_exec: {mpi.launcher_exec!r} is not an executable")
        args += ["-launcher-exec", found]
    elif (mpi.hosts or mpi.hostfile) and mpi.launcher in ("", "ssh", "rsh"):
        args += ["-launcher-exec", str(HOSTEXEC)]
    if mpi.iface:
        args += ["-iface", mpi.iface]
    return args


class JobLog:
    """``run-hour``'s view of the job's output, so that a failure reads as one line, then one
    traceback: lines go to stdout as they come, but from the first error on, what is not a
    progress line (the failing rank's error line and traceback, ``mpiexec``'s report) is held,
    to follow the one-line reason on stderr (:meth:`details`)."""

    def __init__(self):
        self.held: list[str] = []

    def __call__(self, line: str) -> None:
        error = line.startswith(ERROR_PREFIXES) or is_mpiexec_report(line)
        if error or (self.held and not line.startswith("[streamtrain] ")):
            self.held.append(line)
        else:
            print(line, flush=True)

    def details(self, err: CommandFailed) -> list[str]:
        """The held lines but the one the reason was made of (and ``mpiexec``'s report, when
        the reason names the rank it reported lost)."""
        reason = err.first_error
        drop_report = reason and not reason.startswith(ERROR_PREFIXES)
        return [ln for ln in self.held if ln.strip() and ln != reason
                and not (drop_report and is_mpiexec_report(ln))]

    def flush(self) -> None:
        for line in self.held:
            print(line, flush=True)
        self.held = []


def run_hour(cfg: ModelConfig, hour: int, force: bool = False) -> int:
    """Train (under mpiexec), save and publish one hour: ``streamtrain run-hour``.

    The hour's staging is claimed here and held through ``save``, so no other run of the hour can
    touch it in between. A failed job raises :class:`~trainer.process.CommandFailed` with the
    job's exit code (the command line exits with it) after its staging was removed.
    """
    from trainer import actions, store
    from trainer.outcome import parse_result
    from trainer.jsonsafe import strict_dumps

    claim = store.take_claim(cfg.model_dir, hour)
    try:
        command = mpiexec_command(cfg, hour, force, claim=claim.token)
        print(f"running: {shlex.join(command)}", flush=True)
        log = JobLog()
        try:
            lines = run_streaming(command, on_line=log)
        except CommandFailed as err:
            store.release_claim(cfg.model_dir, hour, claim.token, clean_staging=True)
            err.details = log.details(err)
            raise
        log.flush()
        outcome = parse_result(lines)
        if outcome is None:
            raise CommandFailed(command, 1, ["[streamtrain] error: the job exited 0 without a "
                                             "result line"] + lines[-5:])
        if outcome["status"] == "empty":
            return 0  # recorded empty by the job: no version to save or publish
        print(actions.save(cfg, hour))  # already committed (skipped): a no-op that says so
        print(strict_dumps(actions.publish(cfg, hour)))
        return 0
    finally:
        store.release_claim(cfg.model_dir, hour, claim.token)  # a no-op once saved
