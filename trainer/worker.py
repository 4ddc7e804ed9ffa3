"""A worker rank: reads its share of the hour, pulls rows, scores each batch before learning from
it, and pushes gradients without waiting for other workers.

Per batch: one pull message per server (its features, plus its dense slice every
``train.dense_pull_every`` batches), then one push per server (features, show/click counts,
gradients, its slice of the dense gradient). Pushes are asynchronous; at most
``train.max_pushes_in_flight`` unacknowledged pushes per server bound the staleness.

Pipelining: a reader thread decodes Parquet, de-duplicates and routes the next batches (pyarrow
and numpy release the GIL there), and the pull of batch b+1 is in flight while batch b computes.
So a batch's rows may miss this worker's previous push (one batch of staleness, as in any
asynchronous parameter server); with one worker the message order, and so the result, is still
deterministic.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from mpi4py import MPI

from trainer import partition
from trainer.comm import (TAG_DONE, TAG_PULL, TAG_PULL_REPLY, TAG_PUSH, TAG_PUSH_ACK, Backoff,
                          Roles, pack)
from trainer.config import ModelConfig
from trainer.hours import hour_str
from trainer.metrics import ProgressiveMetrics
from trainer.reader import BatchReader, ReadStats, dedup
from trainer.sharding import group_by_owner, server_of_shard, shard_of


class Routed(NamedTuple):
    """A batch ready to pull: its unique features and which of them each server owns."""

    batch: object  # trainer.reader.Batch
    features: object  # trainer.reader.Dedup
    groups: list  # groups[server] = indexes into features


@dataclass
class WorkerStats:
    batches: int = 0
    rows: int = 0
    keys: int = 0
    read: ReadStats | None = None


class Worker:
    def __init__(self, comm: MPI.Comm, cfg: ModelConfig, roles: Roles, step,
                 bounds: np.ndarray, hour: int, backoff: Backoff, metrics: ProgressiveMetrics):
        self.comm, self.cfg, self.roles, self.step = comm, cfg, roles, step  # network.step.Step
        self.bounds, self.hour, self.backoff, self.metrics = bounds, hour, backoff, metrics
        self.width = cfg.table.dim + 1
        self.flat = np.zeros(step.layout.num_params, np.float32)  # latest pulled dense parameters
        self.in_flight = np.zeros(roles.servers, np.int64)
        self.sends: list[tuple[MPI.Request, np.ndarray]] = []
        self.stats = WorkerStats()

    # -- the loop --------------------------------------------------------------------------
    def run(self, units) -> WorkerStats:
        part = partition.locate(self.cfg.data_root, self.hour, self.cfg.s3)
        reader = BatchReader(units, self.cfg.columns, self.cfg.train.batch_size,
                             filesystem=part.fs, quarantine_path=self._quarantine_path())
        every = self.cfg.train.dense_pull_every
        started = last_report = time.monotonic()
        routed = _prefetch((self._route(b) for b in reader), depth=2)
        current = next(routed, None)
        pull = self._start_pull(current, want_dense=True) if current else None
        while current is not None:
            rows = self._finish_pull(pull)
            upcoming = next(routed, None)
            if upcoming is not None:  # in flight while this batch computes
                pull = self._start_pull(upcoming, want_dense=(self.stats.batches + 1) % every == 0)
            batch, features, groups = current
            step = self.step.train(self.flat, batch, features, rows)
            self.metrics.update(batch.labels, step.probs, batch.shows if batch.has_shows else None)
            self._push(features, groups, step)
            self.stats.batches += 1
            self.stats.rows += batch.num_rows
            self.stats.keys += batch.num_features
            now = time.monotonic()
            if now - last_report >= self.cfg.train.progress_seconds:
                self._report(now - started)
                last_report = now
            current = upcoming
        self._finish()
        self.stats.read = reader.stats
        self._report(time.monotonic() - started)
        return self.stats

    def _route(self, batch) -> Routed:
        features = dedup(batch)
        owners = server_of_shard(
            shard_of(features.keys, features.slots, self.cfg.table_num_shards), self.roles.servers)
        return Routed(batch, features, group_by_owner(owners, self.roles.servers))

    def _quarantine_path(self) -> str:
        folder = self.cfg.train.bad_rows_dir or f"{self.cfg.model_dir}/quarantine"
        return f"{folder}/{hour_str(self.hour)}-worker{self.roles.worker_index}.parquet"

    def _report(self, elapsed: float) -> None:
        got = self.metrics.get()
        print(f"[streamtrain] worker {self.roles.worker_index}: {self.stats.rows} rows, "
              f"{self.stats.rows / max(elapsed, 1e-9):,.0f} rows/s, "
              f"running auc {got.get('auc', float('nan')):.4f}", flush=True)

    # -- pull --------------------------------------------------------------------------------
    def _start_pull(self, routed: Routed, want_dense: bool) -> tuple:
        """Send one pull request per server that owns features (every server when dense is due)."""
        features = routed.features
        flag = np.array([1 if want_dense else 0], np.int64)
        pending = []
        for server, index in enumerate(routed.groups):
            if index.size == 0 and not want_dense:
                continue
            lo, hi = self.bounds[server], self.bounds[server + 1]
            reply = np.empty(index.size * self.width + (hi - lo if want_dense else 0), np.float32)
            receive = self.comm.Irecv([reply, MPI.FLOAT], source=server, tag=TAG_PULL_REPLY)
            packet = pack(features.keys[index], features.slots[index], flag)
            send = self.comm.Isend([packet, MPI.BYTE], dest=server, tag=TAG_PULL)
            pending.append((server, index, reply, receive, send, packet))
        return features.keys.size, want_dense, pending

    def _finish_pull(self, pull: tuple) -> np.ndarray:
        """Wait for the replies of :meth:`_start_pull`; rows in the order of the batch's features."""
        count, want_dense, pending = pull
        rows = np.empty((count, self.width), np.float32)
        for server, index, reply, receive, send, _packet in pending:
            self.backoff.complete(receive, f"pull reply from server {server}")
            self.backoff.complete(send, f"pull request to server {server}")
            split = index.size * self.width
            rows[index] = reply[:split].reshape(-1, self.width)
            if want_dense:
                self.flat[self.bounds[server]:self.bounds[server + 1]] = reply[split:]
        return rows

    # -- push --------------------------------------------------------------------------------
    def _push(self, features, groups, step) -> None:
        for server, index in enumerate(groups):
            while self.in_flight[server] >= self.cfg.train.max_pushes_in_flight:
                self._receive_ack()
            packet = pack(features.keys[index], features.slots[index], features.shows[index],
                          features.clicks[index], step.sparse_grads[index],
                          step.dense_grads[self.bounds[server]:self.bounds[server + 1]])
            request = self.comm.Isend([packet, MPI.BYTE], dest=server, tag=TAG_PUSH)
            self.sends.append((request, packet))  # the buffer lives until the send completes
            self.in_flight[server] += 1
        self.sends = [(r, p) for r, p in self.sends if not r.Test()]

    def _receive_ack(self) -> None:
        status = self.backoff.probe(self.comm, tag=TAG_PUSH_ACK, what="a push acknowledgement")
        ack = np.empty(3, np.int64)
        self.comm.Recv([ack, MPI.INT64_T], source=status.Get_source(), tag=TAG_PUSH_ACK)
        self.in_flight[status.Get_source()] -= 1

    def _finish(self) -> None:
        """End of data: every push acknowledged, then tell each server we are done."""
        while self.in_flight.sum():
            self._receive_ack()
        for request, _packet in self.sends:
            self.backoff.complete(request, "a push send")
        self.sends = []
        done = np.zeros(1, np.uint8)
        for server in self.roles.server_ranks():
            self.comm.Send([done, MPI.BYTE], dest=server, tag=TAG_DONE)


def _prefetch(items, depth: int):
    """Iterate `items` in a background thread, `depth` ahead; its exceptions re-raise here."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    end = object()

    def produce():
        try:
            for item in items:
                buffer.put(item)
            buffer.put(end)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            buffer.put(err)

    threading.Thread(target=produce, name="reader", daemon=True).start()
    while True:
        item = buffer.get()
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
