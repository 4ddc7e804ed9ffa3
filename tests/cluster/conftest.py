"""Fixtures of the cluster tests: namespaced hosts (``scripts/netns_hosts.py``) and a real S3
server. Where namespaces cannot be made the tests fail, saying why: they never skip."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import s3_server  # noqa: E402
from netns_hosts import HarnessError, Hosts  # noqa: E402


@pytest.fixture
def make_hosts():
    """``make_hosts(["h1", "h2"])`` -> a :class:`netns_hosts.Hosts`, removed after the test."""
    made = []

    def make(names):
        hosts = Hosts(names)
        try:
            hosts.__enter__()
        except HarnessError as err:
            pytest.fail(f"cannot make network namespaces for the cluster tests: {err}",
                        pytrace=False)
        made.append(hosts)
        return hosts

    yield make
    for hosts in made:
        hosts.close()


@pytest.fixture
def start_s3(tmp_path):
    """``start_s3(address="127.0.0.1")`` -> an :class:`s3_server.S3Server` on ``address``."""
    procs = []

    def start(address: str = "127.0.0.1") -> s3_server.S3Server:
        proc, server = s3_server.start(address, tmp_path / f"moto-{len(procs)}.log")
        procs.append(proc)
        return server

    yield start
    for proc in procs:
        s3_server.stop(proc)


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> s3_server.S3Server:
    """A real S3 server on loopback with one bucket, shared by a test module (each test uses
    its own prefix)."""
    proc, server = s3_server.start("127.0.0.1", tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    s3_server.stop(proc)
