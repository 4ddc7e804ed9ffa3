"""predict: a committed version scores a Parquet file (no MPI, no optimizer state)."""
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.store.store_helpers import H0, make_cols, split_shards
from trainer.store import Stage, save

reader = pytest.importorskip("trainer.reader")
from trainer.network import load as network_load  # noqa: E402
from trainer.store.predict import WeightIndex, predict  # noqa: E402

DIM = 4


@dataclass(frozen=True)
class Cols:
    label: str = "label"
    show: str = ""
    slots: tuple = ("user", "tags")
    dense: tuple = ("d0",)
    dense_fill: float = 0.0
    bad_rows: str = "fail"
    shared_tables: dict = None


def _commit(d, hour, kind, parent, cols, params, network):
    st = Stage.open(d, hour, kind, parent, num_shards=3, dim=DIM, opt_width=2)
    infos = [st.write_shard(s, c) for s, c in enumerate(split_shards(cols, 3))]
    st.finish(infos + [st.write_dense({"params": params})], extra={"network": network.record()})
    return save(d, hour).version


def test_predict_matches_reference(tmp_path):
    import jax

    source = network_load.resolve("dnn", {"hidden": [8]}, tmp_path)
    cfg = SimpleNamespace(model_dir=tmp_path / "m", table_num_shards=3, columns=Cols(),
                          table=SimpleNamespace(dim=DIM), network_source=source,
                          train=SimpleNamespace(batch_size=16), compile_cache_dir="")
    built = network_load.build(source, network_load.input_spec(cfg, 1), 16)
    layout = built.layout
    params = layout.flatten({k: np.asarray(v) for k, v in
                             built.network.init(jax.random.PRNGKey(1)).items()})
    ids = np.arange(1, 41, dtype=np.uint64)
    base = make_cols(40, dim=DIM, keys=ids, slots=np.repeat(np.array([0, 1], np.int32), 20))
    base["weights"] *= 0.5
    v1 = _commit(cfg.model_dir, H0, "full", None, base, params, built)
    # delta: user 1 updated, user 2 evicted (tombstone), user 3 pending (keeps its admitted row)
    upd = make_cols(3, dim=DIM, seed=5, keys=np.array([1, 2, 3], np.uint64),
                    slots=np.zeros(3, np.int32), states=np.array([0, 2, 1]))
    params2 = params * 1.5
    _commit(cfg.model_dir, H0 + 1, "delta", v1, upd, params2, built)

    table = {(int(k), int(s)): w for k, s, w in zip(base["key"], base["slot"], base["weights"])}
    table[(1, 0)] = upd["weights"][0]
    del table[(2, 0)]
    n = 50
    rng = np.random.default_rng(0)
    users = rng.integers(1, 25, n)
    inp = pa.table({
        "label": pa.array(rng.integers(0, 2, n), pa.int64()),
        "user": pa.array(users, pa.int64()),
        "tags": pa.array([list(rng.integers(18, 45, i % 3)) for i in range(n)], pa.list_(pa.int64())),
        "d0": pa.array(rng.random(n)),
    })
    pq.write_table(inp, tmp_path / "in.parquet", row_group_size=16)
    out = predict(cfg, None, str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"),
                  batch_size=7)
    assert out["rows"] == n and out["chain"] == ["v000001", "v000002"]
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.num_rows == n
    # reference: the network applied to inputs pooled row by row from the dict table
    p = layout.unflatten(params2)
    tags = inp.column("tags").to_pylist()
    pooled = np.zeros((n, 2 * DIM), np.float32)
    wide = np.zeros(n, np.float32)
    for i in range(n):
        for f, feats in ((0, [int(users[i])]), (1, tags[i])):
            for k in feats:
                w = table.get((int(k), f), np.zeros(1 + DIM, np.float32))
                wide[i] += w[0]
                pooled[i, f * DIM:(f + 1) * DIM] += w[1:]
    inputs = network_load.Inputs(pooled.reshape(n, 2, DIM), wide,
                                 inp.column("d0").to_numpy().astype(np.float32)[:, None], {}, {})
    want = jax.nn.sigmoid(built.network.apply(p, inputs))
    np.testing.assert_allclose(got.column("pred").to_numpy(), want, rtol=1e-5, atol=1e-6)
    # an older version of the chain scores with its own weights
    old = predict(cfg, "v000001", str(tmp_path / "in.parquet"), str(tmp_path / "o1.parquet"))
    assert old["chain"] == ["v000001"]


def test_weight_index_lookup():
    idx = WeightIndex(np.array([5, 3, 5], np.uint64), np.array([0, 0, 1], np.int32),
                      np.arange(6, dtype=np.float32).reshape(3, 2))
    got = idx.lookup(np.array([3, 5, 5, 9, 2**64 - 1], np.uint64), np.array([0, 1, 0, 0, 2], np.int32))
    assert got.tolist() == [[2, 3], [4, 5], [0, 1], [0, 0], [0, 0]]
