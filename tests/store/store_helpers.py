"""Helpers for the model-store tests: export dicts made with numpy (pstable's dtypes/shapes)."""
from __future__ import annotations

import numpy as np

from trainer.store import Stage, StoreLayout, load_chain, read_state, save

DIM = 4
K = 2
NUM_SHARDS = 4
H0 = 490_000 - 490_000 % 24  # an hour 00 (a full-save hour)


def make_cols(n, *, dim=DIM, k=K, seed=0, states=None, keys=None, slots=None):
    rng = np.random.default_rng(seed)
    if keys is None:
        keys = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    if slots is None:
        slots = rng.integers(0, 5, n).astype(np.int32)
    if states is None:
        states = np.zeros(n, np.uint8)
    return {
        "key": np.asarray(keys, np.uint64),
        "slot": np.asarray(slots, np.int32),
        "state": np.asarray(states, np.uint8),
        "show": rng.random(n, dtype=np.float32) * 10,
        "click": rng.random(n, dtype=np.float32),
        "last_seen": rng.integers(400_000, 500_000, n).astype(np.int32),
        "weights": rng.standard_normal((n, 1 + dim), dtype=np.float32),
        "opt_state": rng.random((n, k), dtype=np.float32),
    }


def take(cols, mask):
    return {c: a[mask] for c, a in cols.items()}


def concat(parts):
    return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}


def split_shards(cols, num_shards=NUM_SHARDS):
    """Stand-in for trainer.sharding.shard_of (the store only needs *a* fixed assignment)."""
    s = ((cols["key"] ^ cols["slot"].astype(np.uint64)) % np.uint64(num_shards)).astype(np.int64)
    return [take(cols, s == i) for i in range(num_shards)]


def dense_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"w0": rng.standard_normal((7, 3)).astype(np.float32),
            "b0": rng.standard_normal(3).astype(np.float32),
            "adam_m_w0": np.zeros((7, 3), np.float32), "step": np.array(5, np.int64)}


def stage(model_dir, hour, kind, parent, cols, *, num_shards=NUM_SHARDS, num_servers=1,
          dim=DIM, k=K, dense_seed=0, metrics=None, partition=None):
    """Stage ``cols`` the way the MPI job does: each server rank its shards, rank 0 the rest."""
    shards = split_shards(cols, num_shards)
    infos = []
    for rank in range(num_servers):
        st = Stage.open(model_dir, hour, kind, parent, num_shards=num_shards, dim=dim,
                        opt_width=k, optimizer_rule="adagrad")
        for s in range(num_shards):
            if s % num_servers == rank:
                infos.append(st.write_shard(s, shards[s]).to_dict())
    st0 = st  # "rank 0": writes dense and meta.json after gathering every FileInfo
    infos.append(st0.write_dense(dense_arrays(dense_seed)))
    return st0.finish(infos, partition=partition, metrics=metrics or {"auc": 0.7},
                      config_hash="cfg", code_version="test")


def commit(model_dir, hour, kind, parent, cols, **kw):
    stage(model_dir, hour, kind, parent, cols, **kw)
    return save(model_dir, hour, kind=kind)


def chain_rows(model_dir, **kw):
    """Every version's shard columns concatenated in chain order (for equality checks)."""
    ch = load_chain(model_dir, **kw)
    out = []
    for v in ch.versions:
        out.append([ch.read_shard(v.version, s) for s in range(ch.num_shards)])
    return ch, out


def snapshot(model_dir):
    """What a reader sees: ledger-visible versions and the head."""
    st = read_state(StoreLayout(model_dir))
    return (list(st.versions), st.head)


def reference_apply(exports):
    """Python reference of SparseTable.load in order (tests only, small n): dict feature -> the
    admitted row's weights."""
    table = {}
    for cols in exports:
        for i in range(cols["key"].shape[0]):
            f = (int(cols["key"][i]), int(cols["slot"][i]))
            st = int(cols["state"][i])
            if st == 0:
                table[f] = cols["weights"][i].copy()
            else:  # a pending entry (1) replaces the row too; a tombstone (2) removes both
                table.pop(f, None)
    return table


def assert_cols_equal(a, b):
    assert set(a) == set(b)
    for c in a:
        assert a[c].dtype == b[c].dtype, c
        assert a[c].shape == b[c].shape, c
        assert a[c].tobytes() == b[c].tobytes(), c
