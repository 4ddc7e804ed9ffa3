"""``trainer.comm`` and the server's dispatch in this process, on ``MPI.COMM_SELF`` (a rank
sending to itself): packing, the waiting helper, pull / push / done as a worker sends them.
The same code under ``mpiexec`` with several ranks: ``test_job_mpi.py``."""
from __future__ import annotations

import time

import numpy as np
import pytest
from mpi4py import MPI

import pstable
from trainer.comm import (TAG_DONE, TAG_PULL, TAG_PULL_REPLY, TAG_PUSH, TAG_PUSH_ACK, Backoff,
                          JobError, pack, recv_bytes, unpack)
from trainer.network.optimizer import DenseOptimizer
from trainer.server import DenseSlice, Server

SELF = MPI.COMM_SELF
QUICK = Backoff(spins=2, min_us=10, max_us=200, timeout_s=5.0)


# ----------------------------------------------------------------------------- pack / unpack

def test_unpack_returns_views_of_what_pack_put_in():
    keys = np.array([0, 1, 2**64 - 1], np.uint64)
    slots = np.array([3, -1, 7], np.int32)
    grads = np.arange(6, dtype=np.float32).reshape(3, 2)
    empty = np.zeros(0, np.float32)
    packet = pack(keys, slots, grads, empty)
    assert packet.dtype == np.uint8
    got = unpack(packet, np.uint64, np.int32, np.float32, np.float32)
    for want, have in zip((keys, slots, grads.reshape(-1), empty), got):
        assert have.dtype == want.dtype and np.array_equal(have, want)
    assert all(np.shares_memory(have, packet) for have in got[:3])  # no copies


def test_a_packet_of_another_shape_is_refused():
    packet = pack(np.zeros(2, np.int64), np.zeros(2, np.int64))
    with pytest.raises(JobError, match="malformed packet: 2 arrays, expected 3"):
        unpack(packet, np.int64, np.int64, np.int64)


def test_pack_takes_non_contiguous_arrays():
    every_other = np.arange(10, dtype=np.int64)[::2]
    (back,) = unpack(pack(every_other), np.int64)
    assert back.tolist() == [0, 2, 4, 6, 8]


# ----------------------------------------------------------------------------- waiting

def test_wait_returns_the_first_ready_value_after_spinning_then_sleeping():
    calls = []

    def ready():
        calls.append(1)
        return "here" if len(calls) == 5 else None

    assert Backoff(spins=2, min_us=10, max_us=20, timeout_s=5.0).wait(ready, "x") == "here"
    assert len(calls) == 5


def test_wait_gives_up_after_its_timeout_naming_what_it_waited_for():
    started = time.monotonic()
    with pytest.raises(JobError, match=r"rank 0 on .*: waited 0s for the pull reply from server 1"):
        Backoff(spins=3, min_us=10, max_us=1000, timeout_s=0.2).wait(
            lambda: None, "the pull reply from server 1")
    assert 0.2 <= time.monotonic() - started < 5.0


def test_probe_sees_a_message_and_recv_bytes_takes_it_whole():
    payload = pack(np.array([5, 6], np.uint64))
    send = SELF.Isend([payload, MPI.BYTE], dest=0, tag=TAG_PULL)
    status = QUICK.probe(SELF, what="a request")
    assert (status.Get_tag(), status.Get_source()) == (TAG_PULL, 0)
    got = recv_bytes(SELF, status)
    QUICK.complete(send, "the send")
    assert np.array_equal(got, payload)


def test_probe_times_out_when_nothing_comes():
    with pytest.raises(JobError, match="for worker requests"):
        Backoff(spins=1, min_us=10, max_us=100, timeout_s=0.1).probe(
            SELF, tag=TAG_PUSH_ACK, what="worker requests")


def test_barrier_of_one_rank_completes():
    QUICK.barrier(SELF, "the end of data")


# ----------------------------------------------------------------------------- server dispatch

DIM = 4


def _server(num_workers=1, dense_size=3):
    config = pstable.TableConfig(dim=DIM, optimizer=pstable.OptimizerConfig(
        rule="sgd", learning_rate=0.5, initial_range=0.0))
    table = pstable.SparseTable(config)
    dense = DenseSlice(np.ones(dense_size, np.float32), DenseOptimizer("sgd", learning_rate=0.5))
    return Server(SELF, table, dense, hour=100, num_workers=num_workers, backoff=QUICK)


def _send(tag, *arrays):
    packet = pack(*arrays) if arrays else np.zeros(1, np.uint8)
    return SELF.Isend([packet, MPI.BYTE], dest=0, tag=tag), packet


def _pull_request(keys, want_dense):
    return _send(TAG_PULL, keys, np.zeros(keys.size, np.int32),
                 np.array([int(want_dense)], np.int64))


def test_the_server_answers_pull_push_pull_in_order_then_stops_on_done():
    keys = np.array([11, 12], np.uint64)
    grads = np.ones((2, DIM + 1), np.float32)
    dense_grad = np.array([1.0, 0.0, -1.0], np.float32)
    # replies are received into buffers posted first, as a worker does (a blocking send to
    # oneself may wait for its receive)
    first = np.empty(2 * (DIM + 1) + 3, np.float32)
    ack = np.empty(3, np.int64)
    second = np.empty(2 * (DIM + 1), np.float32)
    replies = [SELF.Irecv([first, MPI.FLOAT], source=0, tag=TAG_PULL_REPLY),
               SELF.Irecv([ack, MPI.INT64_T], source=0, tag=TAG_PUSH_ACK),
               SELF.Irecv([second, MPI.FLOAT], source=0, tag=TAG_PULL_REPLY)]
    requests = [
        _pull_request(keys, want_dense=True),
        _send(TAG_PUSH, keys, np.zeros(2, np.int32), np.ones(2, np.float32),
              np.zeros(2, np.float32), grads, dense_grad),
        _pull_request(keys, want_dense=False),
        _send(TAG_DONE),
    ]
    server = _server()
    stats = server.serve()
    for request in [r for r, _ in requests] + replies:
        QUICK.complete(request, "a request or reply")

    assert np.array_equal(first[:-3], np.zeros(2 * (DIM + 1)))  # new rows start at zero here
    assert np.array_equal(first[-3:], [1, 1, 1])  # the dense slice, asked for
    assert ack.tolist() == [2, 0, 0]  # both rows created by the push
    assert np.allclose(second, -0.5)  # one sgd step of lr 0.5 on gradient 1 (shows: 1)
    assert np.allclose(server.dense.params, [0.5, 1.0, 1.5])
    assert (stats.pulls, stats.pushes, stats.keys_pulled, stats.keys_pushed) == (2, 1, 4, 2)


def test_the_server_waits_for_every_worker_to_be_done():
    request, _packet = _send(TAG_DONE)
    server = _server(num_workers=2)
    server.backoff = Backoff(spins=1, min_us=10, max_us=100, timeout_s=0.2)
    with pytest.raises(JobError, match="for worker requests"):
        server.serve()  # one of two workers said done
    QUICK.complete(request, "the send")


def test_an_unknown_tag_is_an_error_naming_it():
    request, _packet = _send(99, np.zeros(1, np.int64))
    with pytest.raises(JobError, match="unknown message tag 99 from rank 0"):
        _server().serve()
    QUICK.complete(request, "the send")
