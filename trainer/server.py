"""A parameter server rank: hosts its logical shards in one pstable table plus a slice of the dense
parameters, and answers worker requests until every worker says it is done.

Requests from one worker are served in the order it sent them (MPI keeps per-pair order), so a
worker's pull always sees its own earlier pushes; pushes from different workers interleave freely
(asynchronous training, like PaddlePaddle's ``a_sync``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

import pstable
from trainer.comm import (TAG_DONE, TAG_PULL, TAG_PULL_REPLY, TAG_PUSH, TAG_PUSH_ACK, Backoff,
                          JobError, recv_bytes, unpack)
from trainer.network.optimizer import DenseOptimizer


def dense_bounds(num_params: int, num_servers: int) -> np.ndarray:
    """Start offsets (plus the end) of each server's contiguous slice of the flat dense vector."""
    return np.linspace(0, num_params, num_servers + 1).astype(np.int64)


@dataclass
class DenseSlice:
    """This server's part of the flat dense parameter vector and its optimizer state."""

    params: np.ndarray  # float32 [hi - lo]
    optimizer: DenseOptimizer
    state: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.state:
            self.state = self.optimizer.init_state({"all": self.params})

    def apply(self, grad: np.ndarray) -> None:
        if grad.shape != self.params.shape:
            raise JobError(f"dense gradient has {grad.size} values, this server holds "
                           f"{self.params.size}")
        self.optimizer.apply({"all": self.params}, {"all": grad}, self.state)


@dataclass
class ServeStats:
    pulls: int = 0
    pushes: int = 0
    keys_pulled: int = 0
    keys_pushed: int = 0
    created: int = 0
    filtered: int = 0
    updated: int = 0
    busy_seconds: float = 0.0


class Server:
    """Serves pull / push / done requests for one data hour."""

    def __init__(self, comm: MPI.Comm, table: pstable.SparseTable, dense: DenseSlice, hour: int,
                 num_workers: int, backoff: Backoff):
        self.comm, self.table, self.dense = comm, table, dense
        self.hour, self.num_workers, self.backoff = hour, num_workers, backoff
        self.width = table.config.dim + 1
        self.stats = ServeStats()
        self._handlers = {TAG_PULL: self._pull, TAG_PUSH: self._push}

    def serve(self) -> ServeStats:
        """Loop until every worker sent TAG_DONE; dispatch on the tag, reply to the source."""
        done = 0
        while done < self.num_workers:
            status = self.backoff.probe(self.comm, what="worker requests")
            packet = recv_bytes(self.comm, status)
            tag = status.Get_tag()
            if tag == TAG_DONE:
                done += 1
                continue
            handler = self._handlers.get(tag)
            if handler is None:
                raise JobError(f"server got unknown message tag {tag} from rank "
                               f"{status.Get_source()}")
            started = time.perf_counter()
            handler(packet, status.Get_source())
            self.stats.busy_seconds += time.perf_counter() - started
        return self.stats

    def _pull(self, packet: np.ndarray, source: int) -> None:
        keys, slots, flags = unpack(packet, np.uint64, np.int32, np.int64)
        rows = self.table.pull(keys, slots)
        if flags[0]:
            reply = np.concatenate([rows.reshape(-1), self.dense.params])
        else:
            reply = rows.reshape(-1)
        self.comm.Send([reply, MPI.FLOAT], dest=source, tag=TAG_PULL_REPLY)
        self.stats.pulls += 1
        self.stats.keys_pulled += keys.size

    def _push(self, packet: np.ndarray, source: int) -> None:
        keys, slots, shows, clicks, grads, dense_grad = unpack(
            packet, np.uint64, np.int32, np.float32, np.float32, np.float32, np.float32)
        result = self.table.push(keys, slots, shows, clicks, grads.reshape(-1, self.width),
                                 self.hour)
        if dense_grad.size:
            self.dense.apply(dense_grad)
        ack = np.array([result.created, result.filtered, result.updated], dtype=np.int64)
        self.comm.Send([ack, MPI.INT64_T], dest=source, tag=TAG_PUSH_ACK)
        self.stats.pushes += 1
        self.stats.keys_pushed += keys.size
        self.stats.created += result.created
        self.stats.filtered += result.filtered
        self.stats.updated += result.updated
