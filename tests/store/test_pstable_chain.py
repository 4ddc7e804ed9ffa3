"""Bit-identical: SparseTable -> base + deltas (with evictions) -> reload, through pstable."""
import numpy as np
import pytest

pstable = pytest.importorskip("pstable")

from tests.store.store_helpers import H0, dense_arrays  # noqa: E402
from trainer.sharding import shards_of_server  # noqa: E402
from trainer.store import Stage, load_chain, save  # noqa: E402

NUM_SHARDS = 5
DIM = 4


def _table():
    from pstable import AdmissionConfig, OptimizerConfig, TableConfig
    return pstable.SparseTable(TableConfig(
        dim=DIM, optimizer=OptimizerConfig(rule="adagrad"),
        admission=AdmissionConfig(policy="count_filter", count=2),
        delete_after_unseen_days=1, seed=3))


def _owner(cols):
    return ((cols["key"] ^ cols["slot"].astype(np.uint64)) % np.uint64(NUM_SHARDS)).astype(np.int64)


def _push(t, rng, hour, n=400, id_range=600):
    keys = rng.integers(0, id_range, n).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    slots = rng.integers(0, 3, n).astype(np.int32)
    grads = rng.standard_normal((n, 1 + DIM)).astype(np.float32) * 0.1
    clicks = (rng.random(n) < 0.2).astype(np.float32)
    t.push(keys, slots, np.ones(n, np.float32), clicks, grads, hour)


def _stage_commit(model_dir, t, hour, kind, parent, num_servers):
    cols = t.export(changed_only=kind == "delta")
    owner = _owner(cols)
    k = pstable.opt_state_width("adagrad", DIM)
    infos = []
    for rank in range(num_servers):
        st = Stage.open(model_dir, hour, kind, parent, num_shards=NUM_SHARDS, dim=DIM,
                        opt_width=k, optimizer_rule="adagrad")
        for s in shards_of_server(rank, NUM_SHARDS, num_servers):
            infos.append(st.write_shard(s, {c: a[owner == s] for c, a in cols.items()}))
    infos.append(st.write_dense(dense_arrays()))
    st.finish(infos)
    res = save(model_dir, hour, kind=kind)
    t.mark_saved()
    return res.version


def _sorted(cols):
    o = np.lexsort((cols["slot"], cols["key"]))
    return {c: a[o] for c, a in cols.items()}


def test_table_base_deltas_reload_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    t = _table()
    _push(t, rng, H0)
    _push(t, rng, H0)
    v = _stage_commit(tmp_path, t, H0, "full", None, num_servers=2)
    _push(t, rng, H0 + 1)
    v = _stage_commit(tmp_path, t, H0 + 1, "delta", v, num_servers=2)
    # new ids only: old ones go unseen and are evicted at the day boundary after two days
    _push(t, rng, H0 + 50, id_range=5000)
    evicted = t.end_day(H0 + 50)
    assert len(evicted["key"]) > 0
    v = _stage_commit(tmp_path, t, H0 + 50, "delta", v, num_servers=2)
    want = _sorted(t.export())

    chain = load_chain(tmp_path, num_shards=NUM_SHARDS, verify=True)
    assert [x.kind for x in chain.versions] == ["full", "delta", "delta"]
    for num_servers in (1, 3):  # saved by 2 servers, loaded by 1 and by 3
        tables = [_table() for _ in range(num_servers)]
        for rank, tr in enumerate(tables):
            for s in shards_of_server(rank, NUM_SHARDS, num_servers):
                for _v, cols in chain.iter_shard(s):
                    tr.load(cols)
        parts = [tr.export() for tr in tables]
        got = _sorted({c: np.concatenate([p[c] for p in parts]) for c in want})
        assert sum(len(tr) for tr in tables) == len(t)
        for c in want:
            assert got[c].dtype == want[c].dtype and got[c].tobytes() == want[c].tobytes(), c
