"""Scoring a Parquet file of the input schema with a committed version: no MPI, no optimizer state.

Reads only ``key`` / ``slot`` / ``state`` / ``weights`` of every shard along the chain (base, then
deltas and their tombstones, applied in numpy as ``SparseTable.load`` would), the head's dense
parameters, and runs ``trainer.reader`` + the network's forward pass
(:meth:`trainer.network.step.Step.predict`, the training step's forward) batch by batch.
Features that are not in the model (never admitted, evicted) read as zeros, as in training.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import StoreError
from .load import load_chain


class WeightIndex:
    """Admitted rows of a chain, sorted by (slot, key), looked up without Python per row."""

    def __init__(self, keys: np.ndarray, slots: np.ndarray, weights: np.ndarray):
        order = np.lexsort((keys, slots))
        self.keys = keys[order]
        self.slots = slots[order]
        self.weights = weights[order]
        self.width = weights.shape[1]
        self._slot_values, self._slot_start = np.unique(self.slots, return_index=True)
        self._slot_end = np.append(self._slot_start[1:], len(self.slots))

    @classmethod
    def from_chain(cls, chain) -> "WeightIndex":
        parts = [chain.merged_shard(s) for s in range(chain.num_shards)]
        return cls(np.concatenate([p["key"] for p in parts]),
                   np.concatenate([p["slot"] for p in parts]),
                   np.concatenate([p["weights"] for p in parts]))

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, keys: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """float32 [n, 1+dim]: the rows of ``(keys, slots)``, zeros where absent."""
        out = np.zeros((len(keys), self.width), np.float32)
        for sv, lo, hi in zip(self._slot_values, self._slot_start, self._slot_end):
            m = np.flatnonzero(slots == sv)
            if not m.size:
                continue
            ks = self.keys[lo:hi]
            pos = np.searchsorted(ks, keys[m])
            pos_c = np.minimum(pos, len(ks) - 1)
            hit = ks[pos_c] == keys[m]
            out[m[hit]] = self.weights[lo + pos_c[hit]]
        return out


def predict(cfg, version: str | None, input_path: str, output_path: str, *,
            batch_size: int | None = None) -> dict:
    """Score ``input_path`` with ``version`` (default: the head) of ``cfg.model_dir``.

    Writes ``output_path`` (Parquet: ``pred`` float32, ``label`` float32, one row per input row in
    file order) and returns a summary dict. Rows the config would reject fail the call
    (``bad_rows`` is forced to "fail" so the output stays aligned with the input). Batches of
    ``batch_size`` rows (default ``train.batch_size``: the training step's shapes). A version
    made by another network than the config's is refused.
    """
    from trainer import partition, reader
    from trainer.network import load as network_load
    from trainer.network import step as network_step

    chain = load_chain(cfg.model_dir, head=version, num_shards=cfg.table_num_shards)
    if not len(chain):
        raise StoreError(f"{cfg.model_dir}: no committed version to predict with")
    head = chain.head
    index = WeightIndex.from_chain(chain)
    dense = chain.read_dense(head)
    if "params" not in dense:
        raise StoreError(f"version {head}: dense.npz has no 'params' array ({sorted(dense)})")
    pf = pq.ParquetFile(input_path)
    columns = cfg.columns
    if dataclasses.is_dataclass(columns) and getattr(columns, "bad_rows", "fail") != "fail":
        columns = dataclasses.replace(columns, bad_rows="fail")
    widths = partition.check_columns(pf.schema_arrow, columns, str(input_path))
    batch_size = batch_size or cfg.train.batch_size
    built = network_load.build(cfg.network_source, network_load.input_spec(cfg, sum(widths)),
                               batch_size)
    saved_network = chain.get(head).meta.get("network")
    network_load.check_saved(saved_network, built.record(), f"version {head}")
    if dense["params"].size != built.layout.num_params:
        raise StoreError(f"version {head}: dense has {dense['params'].size} parameters, the "
                         f"config's network on this input needs {built.layout.num_params}")
    if cfg.compile_cache_dir:
        network_step.use_compile_cache(cfg.compile_cache_dir)
    step = network_step.Step(built, batch_size,
                             prior_logit=network_load.prior_logit_of(saved_network))
    units, first = [], 0
    for g in range(pf.metadata.num_row_groups):
        rows = pf.metadata.row_group(g).num_rows
        if rows:
            units.append(partition.WorkUnit(str(input_path), g, rows, first))
        first += rows
    preds, labels = [], []
    for batch in reader.BatchReader(units, columns, batch_size):
        d = reader.dedup(batch)
        rows = index.lookup(d.keys, d.slots)
        preds.append(step.predict(dense["params"], batch, d, rows))
        labels.append(batch.labels)
    pred = np.concatenate(preds) if preds else np.zeros(0, np.float32)
    label = np.concatenate(labels) if labels else np.zeros(0, np.float32)
    pq.write_table(pa.table({"pred": pred.astype(np.float32), "label": label}), output_path)
    return {"version": head, "chain": [v.version for v in chain.versions], "rows": int(pred.size),
            "model_rows": len(index), "output": str(output_path),
            "mean_pred": float(pred.mean()) if pred.size else None}
