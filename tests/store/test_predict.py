"""predict: a committed version scores Parquet rows (no MPI, no optimizer state), through the
table's own load semantics."""
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.store.store_helpers import H0, make_cols, split_shards
from trainer.store import Stage, StoreError, load_chain, save

reader = pytest.importorskip("trainer.reader")
from trainer.network import load as network_load  # noqa: E402
from trainer.metrics import exact_auc  # noqa: E402
from trainer.store.predict import model_table, predict, version_id  # noqa: E402

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


def _model(tmp_path):
    """A two-version chain (see the delta below) and the config that scores with it."""
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
    # delta: user 1 updated, user 2 evicted (tombstone), user 3 pending: as SparseTable.load
    # applies it, a pending entry replaces the feature's row (it reads as zeros)
    upd = make_cols(3, dim=DIM, seed=5, keys=np.array([1, 2, 3], np.uint64),
                    slots=np.zeros(3, np.int32), states=np.array([0, 2, 1]))
    params2 = params * 1.5
    _commit(cfg.model_dir, H0 + 1, "delta", v1, upd, params2, built)

    table = {(int(k), int(s)): w for k, s, w in zip(base["key"], base["slot"], base["weights"])}
    table[(1, 0)] = upd["weights"][0]
    del table[(2, 0)], table[(3, 0)]
    return cfg, built, layout, params2, table


def _input(n, seed=0):
    rng = np.random.default_rng(seed)
    return pa.table({
        "label": pa.array(rng.integers(0, 2, n), pa.int64()),
        "user": pa.array(rng.integers(1, 25, n), pa.int64()),
        "tags": pa.array([list(rng.integers(18, 45, i % 3)) for i in range(n)], pa.list_(pa.int64())),
        "d0": pa.array(rng.random(n)),
    })


def test_predict_matches_reference(tmp_path):
    import jax

    cfg, built, layout, params2, table = _model(tmp_path)
    n = 50
    inp = _input(n)
    users = inp.column("user").to_numpy()
    assert 3 in users  # the user whose row a pending entry replaced
    pq.write_table(inp, tmp_path / "in.parquet", row_group_size=16)
    out = predict(cfg, None, str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"),
                  batch_size=7)
    assert out["rows"] == n and out["chain"] == ["v000001", "v000002"]
    assert out["model_rows"] == len(table) and out["labelled"] is True
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
    # with a label the summary has the rows' metrics
    labels = inp.column("label").to_numpy()
    assert out["metrics"]["auc"] == pytest.approx(exact_auc(labels, want), abs=1e-3)
    assert out["metrics"]["actual_ctr"] == pytest.approx(labels.mean())
    assert got.column("label").to_numpy().tolist() == labels.tolist()
    # an older version of the chain scores with its own weights, however its id is written
    for name in ("v000001", "v1", "1"):
        old = predict(cfg, name, str(tmp_path / "in.parquet"), str(tmp_path / "o1.parquet"))
        assert old["chain"] == ["v000001"] and old["version"] == "v000001"


def test_unlabelled_rows_are_scored(tmp_path):
    cfg, *_ = _model(tmp_path)
    inp = _input(40, seed=1)
    pq.write_table(inp, tmp_path / "labelled.parquet")
    pq.write_table(inp.drop_columns(["label"]), tmp_path / "unlabelled.parquet")
    with_label = predict(cfg, None, str(tmp_path / "labelled.parquet"), str(tmp_path / "a.parquet"))
    without = predict(cfg, None, str(tmp_path / "unlabelled.parquet"), str(tmp_path / "b.parquet"))
    assert without["labelled"] is False and "metrics" not in without and without["rows"] == 40
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    assert b.column("pred").to_numpy().tolist() == a.column("pred").to_numpy().tolist()
    assert b.column("label").null_count == 40
    assert "metrics" in with_label


def test_a_partition_folder_is_scored_file_by_file_in_name_order(tmp_path):
    cfg, *_ = _model(tmp_path)
    inp = _input(60, seed=2)
    part = tmp_path / "dt=2026-11-26" / "hour=00"
    part.mkdir(parents=True)
    # names sort as b < c, not as written; _SUCCESS and a dot-file are not data
    pq.write_table(inp.slice(30), part / "c.parquet", row_group_size=7)
    pq.write_table(inp.slice(0, 30), part / "b.parquet", row_group_size=11)
    (part / "_SUCCESS").write_bytes(b"")
    (part / ".b.parquet.crc").write_bytes(b"not parquet")
    pq.write_table(inp, tmp_path / "all.parquet")
    folder = predict(cfg, None, str(part), str(tmp_path / "f.parquet"))
    whole = predict(cfg, None, str(tmp_path / "all.parquet"), str(tmp_path / "w.parquet"))
    assert folder["rows"] == 60 and folder["files"] == 2
    assert folder["metrics"] == whole["metrics"]
    assert (pq.read_table(tmp_path / "f.parquet").column("pred").to_numpy().tolist()
            == pq.read_table(tmp_path / "w.parquet").column("pred").to_numpy().tolist())
    (tmp_path / "none").mkdir()
    with pytest.raises(Exception, match="no data files in this folder"):
        predict(cfg, None, str(tmp_path / "none"), str(tmp_path / "x.parquet"))
    with pytest.raises(Exception, match="no such file or folder"):
        predict(cfg, None, str(tmp_path / "nope"), str(tmp_path / "x.parquet"))


def test_version_ids():
    assert [version_id(v) for v in ("v1", "v000001", "1", "V12", "head", None)] == [
        "v000001", "v000001", "v000001", "v000012", None, None]
    for bad in ("v", "vx1", "v0", "-1", "1.5", ""):
        with pytest.raises(StoreError, match="version"):
            version_id(bad)


# ------------------------------------------------ one load semantics: predict == SparseTable.load

def _live_table():
    import pstable

    return pstable.SparseTable(pstable.TableConfig(
        dim=DIM, optimizer={"rule": "adagrad"}, admission={"policy": "count_filter", "count": 2},
        delete_after_unseen_days=1, seed=7))


def _save_export(model_dir, t, hour, kind, parent, num_shards=3):
    cols = t.export(changed_only=kind == "delta")
    owner = ((cols["key"] ^ cols["slot"].astype(np.uint64)) % np.uint64(num_shards)).astype(int)
    st = Stage.open(model_dir, hour, kind, parent, num_shards=num_shards, dim=DIM, opt_width=2,
                    optimizer_rule="adagrad")
    infos = [st.write_shard(s, {c: a[owner == s] for c, a in cols.items()})
             for s in range(num_shards)]
    st.finish(infos + [st.write_dense({"params": np.zeros(3, np.float32)})])
    t.mark_saved()
    return save(model_dir, hour, kind=kind).version, cols


def _push(t, keys, hour, times=1):
    keys = np.asarray(keys, np.uint64)
    n = keys.size
    slots = (keys % np.uint64(3)).astype(np.int32)
    grads = np.random.default_rng(int(keys.sum() % 1000) + hour).standard_normal(
        (n, 1 + DIM)).astype(np.float32)
    for _ in range(times):
        t.push(keys, slots, np.ones(n, np.float32), np.zeros(n, np.float32), grads, hour)


def test_predict_reads_what_sparse_table_load_holds(tmp_path):
    """A chain made by a real table, with pending entries, tombstones and re-admissions: the
    rows predict scores with are exactly the live table's, and a full table loaded from the
    chain (the job's servers) agrees."""
    t = _live_table()
    old, once, later = np.arange(1, 200), np.arange(1000, 1100), np.arange(5000, 5300)
    _push(t, old, H0, times=2)                   # admitted
    _push(t, once, H0)                           # pending (seen once)
    v, base = _save_export(tmp_path, t, H0, "full", None)
    _push(t, once[:50], H0 + 1)                  # half the pending ones admitted
    v, d1 = _save_export(tmp_path, t, H0 + 1, "delta", v)
    _push(t, later, H0 + 50)                     # the rest goes unseen: evicted at the boundary
    t.end_day(H0 + 50)
    v, d2 = _save_export(tmp_path, t, H0 + 50, "delta", v)
    _push(t, old[:40], H0 + 51)                  # evicted ids come back: pending ...
    v, d3 = _save_export(tmp_path, t, H0 + 51, "delta", v)
    _push(t, old[:20], H0 + 52)                  # ... and half of them re-admitted
    v, d4 = _save_export(tmp_path, t, H0 + 52, "delta", v)
    states = [np.bincount(c["state"], minlength=3).tolist() for c in (base, d1, d2, d3, d4)]
    assert states[0][1] > 0 and states[1][0] > 0 and states[2][2] > 0   # pending, admitted, tombstones
    assert states[3][1] == 40 and states[4][0] == 20                    # back pending, re-admitted

    chain = load_chain(tmp_path)
    scoring = model_table(chain)
    servers = _live_table()
    chain.load_into(servers)
    every = np.concatenate([old, once, later, [999_999]]).astype(np.uint64)
    slots = (every % np.uint64(3)).astype(np.int32)
    live = t.pull(every, slots)
    assert np.count_nonzero(live.any(axis=1)) == len(t)      # the zeros are the absent features
    np.testing.assert_array_equal(scoring.pull(every, slots), live)
    np.testing.assert_array_equal(servers.pull(every, slots), live)
    assert len(scoring) == len(servers) == len(t) and servers.num_pending == t.num_pending
    per_shard = []  # each server loads its own shards: together, the same rows
    for shard in range(chain.num_shards):
        one = _live_table()
        chain.load_into(one, [shard])
        per_shard.append(len(one))
    assert sum(per_shard) == len(t) and min(per_shard) > 0
