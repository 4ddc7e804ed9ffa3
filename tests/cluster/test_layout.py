"""The ``[mpi]`` host layout: validation, the mpiexec command it becomes, and the launcher wrapper
that names a lost host (run for real with stand-in launchers)."""
from __future__ import annotations

import subprocess

import pytest

from trainer.config import ConfigError, MpiConfig, load_config
from trainer.launch import HOSTEXEC, mpiexec_command, placement_args

pytestmark = pytest.mark.cluster


def test_two_servers_on_two_hosts_and_two_workers_on_a_third(model_config):
    path = model_config(servers=2, workers=2)
    path.write_text(path.read_text().replace("[mpi]\n", '[mpi]\nhosts = ["a", "b", "c"]\n'
                                             'ranks_per_host = [1, 1, 2]\niface = "eth1"\n'
                                             'env = {UCX_TLS = "tcp"}\n'))
    command = mpiexec_command(load_config(path), 498805)
    assert command[1:5] == ["-n", "4", "-hosts", "a:1,b:1,c:2"]
    assert command[5:11] == ["-launcher-exec", str(HOSTEXEC), "-iface", "eth1",
                             "-genv", "UCX_TLS"]


def test_a_given_launcher_is_used_as_is(tmp_path):
    mpi = MpiConfig(hosts=("a", "b"), launcher="ssh", launcher_exec="/bin/true")
    assert placement_args(mpi) == ["-hosts", "a:1,b:1", "-launcher", "ssh",
                                   "-launcher-exec", "/bin/true"]
    with pytest.raises(ConfigError, match="mpi.launcher_exec: '/no/such' is not an executable"):
        placement_args(MpiConfig(hosts=("a", "b"), launcher_exec="/no/such"))
    assert "-launcher-exec" not in placement_args(MpiConfig(hosts=("a", "b"), launcher="slurm"))


@pytest.mark.parametrize("keys, message", [
    (dict(hosts=("a", "b"), hostfile="/h"), "mpi.hosts or mpi.hostfile, not both"),
    (dict(hosts=("a", "b", "c")), "3 hosts for 2 ranks need mpi.ranks_per_host"),
    (dict(hosts=("a", "b"), ranks_per_host=(2,)), "one count per host"),
    (dict(hosts=("a", "b"), ranks_per_host=(2, 1)), "summing to servers \\+ workers \\(2\\)"),
    (dict(hosts=("a", "b"), ranks_per_host=(2, 0)), "counts >= 1"),
    (dict(hosts=("a", "a")), "listed twice"),
    (dict(hosts=("a:2", "b")), "'a:2' is not a host name"),
    (dict(launcher="telnet"), "mpi.launcher: must be one of"),
    (dict(env={"BAD-NAME": "1"}), "not an environment variable name"),
])
def test_bad_layouts_are_refused_naming_the_key(keys, message):
    with pytest.raises(ConfigError, match=message):
        MpiConfig(**keys).validate()


def run_hostexec(tmp_path, launcher_body: str) -> subprocess.CompletedProcess:
    """hostexec.sh as mpiexec runs it (``-x HOST COMMAND``), over a stand-in launcher."""
    launcher = tmp_path / "launcher"
    launcher.write_text(f"#!/bin/sh\n{launcher_body}\n")
    launcher.chmod(0o755)
    return subprocess.run(["sh", "-c", f'"{HOSTEXEC}" -x 10.9.9.9 "proxy --args"'],
                          env={"STREAMTRAIN_LAUNCHER_EXEC": str(launcher), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("body, status", [("kill -9 $$", 137), ("exit 255", 255)])
def test_hostexec_names_a_host_whose_processes_died(tmp_path, body, status):
    done = run_hostexec(tmp_path, body)
    assert done.returncode == status
    assert (f"[streamtrain] error: host 10.9.9.9 lost: its processes ended under launcher "
            f"with status {status}") in done.stderr.splitlines()


@pytest.mark.parametrize("body, status", [('echo "$@"', 0), ("exit 7", 7)])
def test_hostexec_is_silent_when_the_host_ended_by_itself(tmp_path, body, status):
    done = run_hostexec(tmp_path, body)
    assert done.returncode == status and done.stderr == ""
    if status == 0:
        assert done.stdout == "-x 10.9.9.9 proxy --args\n"  # the launcher got mpiexec's arguments
