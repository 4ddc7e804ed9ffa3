#!/usr/bin/env python3
"""Rehearse a cluster on one machine: N "hosts" as Linux network namespaces on one bridge.

Each host is a network namespace with its own address on a private /24 (made only on the bridge
and the veth pairs this harness creates; nothing else routes to it) and, for every process started
in it, its own hostname. mpiexec runs in the root namespace and starts each host's ranks through
a launcher script that maps the host's address to its namespace::

    ip netns exec <ns> unshare --uts sh -c "hostname <ns>; <command>"

so ranks on different hosts share no network stack and talk over TCP on the bridge
(``UCX_TLS=tcp``: UCX would otherwise see one kernel and use shared memory). The launcher goes
through ``trainer/hostexec.sh``, as a real ssh launcher does, so a host whose processes are all
killed is named in the job's error.

Command line (as root)::

    scripts/netns_hosts.py up h1 h2 h3      # prints the run id and the [mpi] keys to use
    scripts/netns_hosts.py kill RUN h2      # kill every process of host h2
    scripts/netns_hosts.py down RUN         # remove the namespaces, veths and bridge of RUN
    scripts/netns_hosts.py sweep            # remove what crashed runs left behind

In Python (what ``tests/cluster`` uses)::

    with Hosts(["h1", "h2", "h3"]) as hosts:
        overrides = {"mpi": hosts.mpi_settings([2, 1, 1])}   # ranks per host, in rank order
        ...

Every run has a unique id in all its names and a state file (``/run/streamtrain-hosts/<id>.json``)
listing what it made and which process owns it; :meth:`Hosts.__exit__` removes it all (also after
a failure), and :func:`sweep` removes the runs whose owner died without doing so.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOSTEXEC = REPO / "trainer" / "hostexec.sh"
STATE_DIR = Path(os.environ.get("STREAMTRAIN_HOSTS_STATE", "/run/streamtrain-hosts"))
#: Every name this harness makes starts with this (then the run id).
PREFIX = "st"
#: Bounded waits: one ``ip`` call, and how long a killed host's processes may take to go.
IP_TIMEOUT_SECONDS = 20.0
KILL_WAIT_SECONDS = 10.0


class HarnessError(RuntimeError):
    """The namespaces cannot be made (not root, no ``ip``/``unshare``, no netns support)."""


@dataclass(frozen=True)
class Host:
    name: str  #: as given (``h1``)
    namespace: str  #: network namespace, also the hostname its processes see
    address: str  #: its address on the bridge
    veth: str  #: root-namespace end of its veth pair (its traffic counters)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True,
                              timeout=IP_TIMEOUT_SECONDS)
    except FileNotFoundError:
        raise HarnessError("`ip` not found: install iproute2 (scripts/setup.sh does)") from None
    except subprocess.TimeoutExpired:
        raise HarnessError(f"`ip {' '.join(args)}` took over {IP_TIMEOUT_SECONDS:.0f}s") from None
    if check and done.returncode != 0:
        raise HarnessError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def _check_can_make_namespaces() -> None:
    if os.geteuid() != 0:
        raise HarnessError(f"network namespaces need root (running as uid {os.geteuid()})")
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            raise HarnessError(f"`{tool}` not found: install {package} (scripts/setup.sh does)")


def _free_subnet() -> str:
    """A ``10.231.X`` /24 prefix no address or route of this machine uses."""
    used = _ip("-4", "addr").stdout + _ip("-4", "route").stdout
    for third in random.sample(range(1, 255), 254):
        prefix = f"10.231.{third}"
        if f"{prefix}." not in used:
            return prefix
    raise HarnessError("no free 10.231.X.0/24 subnet on this machine")


class Hosts:
    """N namespaced hosts on a bridge, made on enter and removed on exit (see the module doc).

    Parameters
    ----------
    names : list of str
        Host names (letters, digits, ``-``), at most 250.
    """

    def __init__(self, names: list[str]):
        if not names or len(set(names)) != len(names) or len(names) > 250:
            raise ValueError(f"Hosts: 1..250 distinct names, got {names}")
        for name in names:
            if not name.replace("-", "").isalnum() or len(name) > 40:
                raise ValueError(f"Hosts: {name!r} is not a short host name")
        self.names = list(names)
        self.run_id = secrets.token_hex(3)
        self.bridge = f"{PREFIX}{self.run_id}br"
        self.hosts: list[Host] = []
        self.gateway = ""  # the bridge's own address (mpiexec, test servers)
        self.dir = STATE_DIR / self.run_id
        self.launcher = self.dir / "launcher"

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "Hosts":
        _check_can_make_namespaces()
        sweep()
        subnet = _free_subnet()
        self.gateway = f"{subnet}.1"
        self.hosts = [Host(name=n, namespace=f"{PREFIX}{self.run_id}-{n}",
                           address=f"{subnet}.{i + 2}", veth=f"{PREFIX}{self.run_id}v{i}")
                      for i, n in enumerate(self.names)]
        self._write_state(os.getpid())
        try:
            self._make_bridge()
            for i, host in enumerate(self.hosts):
                self._make_host(i, host)
            self._write_launcher()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove every namespace, veth and the bridge of this run (idempotent)."""
        _teardown(self._state())
        shutil.rmtree(self.dir, ignore_errors=True)
        (STATE_DIR / f"{self.run_id}.json").unlink(missing_ok=True)

    def _state(self) -> dict:
        return {"run_id": self.run_id, "bridge": self.bridge,
                "namespaces": [h.namespace for h in self.hosts],
                "veths": [h.veth for h in self.hosts], "dir": str(self.dir)}

    def _write_state(self, owner_pid: int) -> None:
        """Recorded before anything is made, so a crashed run can be swept."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        path = STATE_DIR / f"{self.run_id}.json"
        path.write_text(json.dumps({**self._state(), "owner_pid": owner_pid,
                                    "owner_start": _start_time(owner_pid)}))

    def _make_bridge(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def _make_host(self, index: int, host: Host) -> None:
        peer = f"{PREFIX}{self.run_id}p{index}"
        _ip("netns", "add", host.namespace)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", host.veth, "master", self.bridge, "up")
        _ip("link", "set", peer, "netns", host.namespace)
        inside = ("ip", "netns", "exec", host.namespace)
        # named as the bridge, so `mpiexec -iface <bridge>` names the right interface everywhere
        _ip(*inside[1:], "ip", "link", "set", peer, "name", self.bridge)
        _ip(*inside[1:], "ip", "addr", "add", f"{host.address}/24", "dev", self.bridge)
        _ip(*inside[1:], "ip", "link", "set", self.bridge, "up")
        _ip(*inside[1:], "ip", "link", "set", "lo", "up")

    def _write_launcher(self) -> None:
        """``launcher`` (mpiexec's ``-launcher-exec``) runs ``netns-exec`` under hostexec.sh."""
        self.dir.mkdir(parents=True, exist_ok=True)
        cases = "\n".join(f"  {h.address}) ns={h.namespace} ;;" for h in self.hosts)
        netns_exec = self.dir / "netns-exec"
        netns_exec.write_text(f"""#!/bin/sh
# ssh-style launcher of harness run {self.run_id}: [options] HOST COMMAND -> COMMAND in HOST's namespace
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host="$1"; shift
case "$host" in
{cases}
  *) echo "netns-exec: no host $host in harness run {self.run_id}" >&2; exit 255 ;;
esac
exec ip netns exec "$ns" unshare --uts sh -c "hostname $ns; $*"
""")
        self.launcher.write_text(f"""#!/bin/sh
STREAMTRAIN_LAUNCHER_EXEC="{netns_exec}" exec "{HOSTEXEC}" "$@"
""")
        for script in (netns_exec, self.launcher):
            script.chmod(0o755)

    # -- use ---------------------------------------------------------------------------------
    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def mpi_settings(self, ranks_per_host: list[int]) -> dict:
        """The ``[mpi]`` keys that run ``ranks_per_host[i]`` ranks on host ``i`` (hosts with 0
        ranks are left out), over TCP on the bridge."""
        used = [(h, n) for h, n in zip(self.hosts, ranks_per_host) if n > 0]
        return {"hosts": [h.address for h, _ in used], "ranks_per_host": [n for _, n in used],
                "launcher": "ssh", "launcher_exec": str(self.launcher), "iface": self.bridge,
                "env": {"UCX_TLS": "tcp"}}

    def pids(self, name: str) -> list[int]:
        out = _ip("netns", "pids", self.host(name).namespace, check=False).stdout
        return [int(p) for p in out.split()]

    def kill(self, name: str) -> list[int]:
        """SIGKILL every process of host ``name``; returns their pids once they are gone."""
        pids = self.pids(name)
        _kill_all(pids)
        return pids

    def traffic_bytes(self, name: str) -> tuple[int, int]:
        """Bytes host ``name`` has sent and received on the bridge so far (its veth's root end
        receives what the host sends)."""
        stats = Path("/sys/class/net") / self.host(name).veth / "statistics"
        return int((stats / "rx_bytes").read_text()), int((stats / "tx_bytes").read_text())


# -- teardown and sweeping -----------------------------------------------------------------------
def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_time(pid: int) -> str:
    """A process's start time (field 22 of /proc/PID/stat): a reused pid has another one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _teardown(state: dict) -> None:
    """Kill what runs in the run's namespaces, then delete them, the veths and the bridge."""
    existing = set(_ip("netns", "list", check=False).stdout.split())
    for ns in state["namespaces"]:
        if ns in existing:
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            _kill_all([int(p) for p in pids])
    for veth in state["veths"]:
        if Path(f"/sys/class/net/{veth}").exists():
            _ip("link", "del", veth, check=False)
    for ns in state["namespaces"]:
        if ns in existing:
            _ip("netns", "del", ns, check=False)
    if Path(f"/sys/class/net/{state['bridge']}").exists():
        _ip("link", "del", state["bridge"], check=False)


def sweep() -> list[str]:
    """Tear down the runs whose owner process is gone (a crashed test run); returns their ids.
    Runs made by ``up`` (owner 0) stay until ``down``."""
    swept = []
    for path in sorted(STATE_DIR.glob("*.json")) if STATE_DIR.is_dir() else []:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        owner = int(state.get("owner_pid", 0))
        if owner == 0 or (_alive(owner) and _start_time(owner) == state.get("owner_start")):
            continue
        _teardown(state)
        shutil.rmtree(state.get("dir", ""), ignore_errors=True)
        path.unlink(missing_ok=True)
        swept.append(state["run_id"])
    return swept


def _load(run_id: str) -> dict:
    path = STATE_DIR / f"{run_id}.json"
    if not path.exists():
        raise HarnessError(f"no harness run {run_id!r} (no {path})")
    return json.loads(path.read_text())


# -- command line ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="make hosts (kept until `down`)")
    up.add_argument("names", nargs="+")
    down = sub.add_parser("down", help="remove a run's namespaces, veths and bridge")
    down.add_argument("run_id")
    kill = sub.add_parser("kill", help="SIGKILL every process of one host")
    kill.add_argument("run_id")
    kill.add_argument("name")
    sub.add_parser("sweep", help="remove what crashed runs left behind")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            hosts = Hosts(args.names).__enter__()
            hosts._write_state(0)  # kept: only `down` removes it
            print(f"run {hosts.run_id}: bridge {hosts.bridge} at {hosts.gateway}")
            for h in hosts.hosts:
                print(f"  {h.name}: {h.address} (namespace and hostname {h.namespace})")
            print("[mpi] keys for one rank per host:")
            print(json.dumps(hosts.mpi_settings([1] * len(hosts.hosts)), indent=2))
        elif args.command == "down":
            state = _load(args.run_id)
            _teardown(state)
            shutil.rmtree(state["dir"], ignore_errors=True)
            (STATE_DIR / f"{args.run_id}.json").unlink()
            print(f"run {args.run_id}: removed")
        elif args.command == "kill":
            state = _load(args.run_id)
            ns = f"{PREFIX}{args.run_id}-{args.name}"
            if ns not in state["namespaces"]:
                raise HarnessError(f"run {args.run_id} has no host {args.name!r}")
            pids = [int(p) for p in _ip("netns", "pids", ns).stdout.split()]
            _kill_all(pids)
            print(f"killed {len(pids)} process(es) of {args.name}")
        else:
            print(f"swept: {', '.join(sweep()) or 'nothing'}")
    except HarnessError as err:
        print(f"netns_hosts: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
