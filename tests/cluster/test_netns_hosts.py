"""The harness itself: separate hosts that MPI sees as separate nodes, and nothing left behind,
whether a run ends, fails or crashes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import netns_hosts
from netns_hosts import Hosts
from tests.support import MPIEXEC, PYTHON, REPO

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# rank 0 prints every rank's hostname and sum (one writer: mpiexec may interleave two ranks' lines)
ALLREDUCE = ("from mpi4py import MPI; import json, socket; c = MPI.COMM_WORLD; "
             "seen = c.gather([socket.gethostname(), c.allreduce(c.rank + 1)]); "
             "c.rank == 0 and print(json.dumps(seen), flush=True)")


def leftovers(run_id: str) -> list[str]:
    """Namespaces, links and state files of run `run_id` still there."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = os.listdir("/sys/class/net")
    state = [p.name for p in netns_hosts.STATE_DIR.glob(f"{run_id}*")]
    return [n for n in names + links if run_id in n] + state


def test_ranks_on_two_hosts_see_their_own_hostname_and_reduce_over_tcp(make_hosts):
    hosts = make_hosts(["h1", "h2"])
    mpi = hosts.mpi_settings([1, 1])
    command = [MPIEXEC, "-n", "2", "-hosts", ",".join(f"{a}:1" for a in mpi["hosts"]),
               "-launcher", "ssh", "-launcher-exec", mpi["launcher_exec"], "-iface", mpi["iface"],
               "-genv", "UCX_TLS", "tcp", PYTHON, "-c", ALLREDUCE]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[hosts.host("h1").namespace, 3],
                                       [hosts.host("h2").namespace, 3]]
    assert len({h.address for h in hosts.hosts} | {hosts.gateway}) == 3


def test_everything_is_removed_after_a_failure():
    with pytest.raises(RuntimeError, match="boom"):
        with Hosts(["a", "b"]) as hosts:
            run_id = hosts.run_id
            assert len(leftovers(run_id)) == 2 + 3 + 1 + 1  # netns, bridge + veths, state + dir
            raise RuntimeError("boom")
    assert leftovers(run_id) == []


def test_a_crashed_run_is_swept_by_the_next(tmp_path):
    script = ("import sys, time; sys.path.insert(0, 'scripts'); from netns_hosts import Hosts\n"
              "h = Hosts(['a']).__enter__(); print(h.run_id, flush=True); time.sleep(600)")
    crashed = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                               text=True)
    run_id = crashed.stdout.readline().strip()
    assert leftovers(run_id)
    os.kill(crashed.pid, signal.SIGKILL)  # no __exit__, no finally
    crashed.wait(timeout=30)
    assert leftovers(run_id)
    assert run_id in netns_hosts.sweep()
    assert leftovers(run_id) == []


def test_a_live_run_is_not_swept(make_hosts):
    hosts = make_hosts(["a"])
    assert hosts.run_id not in netns_hosts.sweep()
    state = json.loads((netns_hosts.STATE_DIR / f"{hosts.run_id}.json").read_text())
    assert state["owner_pid"] == os.getpid() and state["namespaces"] == [hosts.host("a").namespace]


def test_without_root_the_cluster_tests_fail_saying_why():
    """In a user namespace (uid 65534, no privileges) a cluster test fails, it never skips."""
    done = subprocess.run(["unshare", "--user", sys.executable, "-m", "pytest", "-q", "-p",
                           "no:cacheprovider", f"{__file__}::test_a_live_run_is_not_swept"],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "STREAMTRAIN_HOSTS_STATE": "/tmp/no-root-hosts"})
    assert done.returncode == 1, done.stdout
    assert ("cannot make network namespaces for the cluster tests: network namespaces need root "
            "(running as uid 65534)") in done.stdout
    assert "1 failed" in done.stdout and "skipped" not in done.stdout


def test_killing_a_host_kills_only_its_processes(make_hosts):
    hosts = make_hosts(["a", "b"])
    sleepers = [subprocess.Popen(["ip", "netns", "exec", h.namespace, "sleep", "600"])
                for h in hosts.hosts]
    try:
        deadline = time.monotonic() + 10
        while not (hosts.pids("a") and hosts.pids("b")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hosts.kill("a")
        assert sleepers[0].wait(timeout=10) == -signal.SIGKILL
        assert hosts.pids("a") == [] and sleepers[1].poll() is None and hosts.pids("b")
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
