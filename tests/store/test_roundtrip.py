"""Stage -> commit -> load: bit-identical, deltas and tombstones in order, re-sharding."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.store.store_helpers import (DIM, H0, K, NUM_SHARDS, assert_cols_equal, chain_rows, commit, concat,
                           dense_arrays, make_cols, reference_apply, split_shards, stage, take)
from trainer.store import (CorruptFileError, SchemaError, ShardCountError, Stage, StagedVersionError,
                           load_chain, save)
from trainer.sharding import shards_of_server
from trainer.store.layout import StoreLayout
from trainer.store.predict import model_table


def test_full_roundtrip_bit_identical(tmp_path):
    cols = make_cols(500, seed=1)
    # every 64-bit value is a key, including 0 and 2**64-1 (int64 -1)
    cols["key"][:3] = np.array([0, 2**64 - 1, 2**63], np.uint64)
    cols["state"][10:20] = 1
    res = commit(tmp_path, H0, "full", None, cols)
    assert res.status == "committed" and res.version == "v000001"
    ch, rows = chain_rows(tmp_path, num_shards=NUM_SHARDS, verify=True)
    assert [v.version for v in ch.versions] == ["v000001"]
    for got, want in zip(rows[0], split_shards(cols)):
        assert_cols_equal(got, want)
    dense = ch.read_dense()
    for k, v in dense_arrays().items():
        assert dense[k].dtype == v.dtype and dense[k].tobytes() == v.tobytes()
    meta = json.loads((tmp_path / "versions/v000001/meta.json").read_bytes())
    assert meta["rows"] == {"admitted": 490, "pending": 10, "tombstones": 0}
    assert meta["checksum_algo"] == "crc32" and meta["num_shards"] == NUM_SHARDS
    assert not (tmp_path / "staging" / meta["hour_str"]).exists()


def test_int64_keys_are_viewed_as_uint64(tmp_path):
    cols = make_cols(50, seed=2)
    signed = dict(cols, key=cols["key"].view(np.int64))
    st = Stage.open(tmp_path, H0, "full", None, num_shards=1, dim=DIM, opt_width=K)
    st.finish([st.write_shard(0, signed), st.write_dense({})])
    save(tmp_path, H0)
    got = load_chain(tmp_path).read_shard("v000001", 0)
    assert got["key"].dtype == np.uint64 and got["key"].tobytes() == cols["key"].tobytes()


def test_opt_width_zero_roundtrip(tmp_path):
    cols = make_cols(40, k=0, seed=3)
    commit(tmp_path, H0, "full", None, cols, k=0)
    ch, rows = chain_rows(tmp_path)
    for got, want in zip(rows[0], split_shards(cols)):
        assert_cols_equal(got, want)


def test_deltas_and_tombstones_apply_in_order(tmp_path):
    base = make_cols(300, seed=4)
    commit(tmp_path, H0, "full", None, base)
    # delta 1: 50 updated rows, 40 new rows, 30 tombstones, 10 pending
    upd = dict(make_cols(50, seed=5), key=base["key"][:50], slot=base["slot"][:50])
    new = make_cols(40, seed=6)
    tomb = dict(make_cols(30, seed=7, states=np.full(30, 2)), key=base["key"][50:80],
                slot=base["slot"][50:80])
    tomb["weights"][:] = 0
    pend = make_cols(10, seed=8, states=np.ones(10))
    d1 = concat([upd, new, tomb, pend])
    commit(tmp_path, H0 + 1, "delta", "v000001", d1)
    # delta 2: a tombstoned feature comes back, an updated one is evicted
    back = dict(make_cols(1, seed=9), key=base["key"][50:51], slot=base["slot"][50:51])
    gone = dict(make_cols(1, seed=10, states=np.full(1, 2)), key=base["key"][:1], slot=base["slot"][:1])
    d2 = concat([back, gone])
    commit(tmp_path, H0 + 2, "delta", "v000002", d2)

    ch = load_chain(tmp_path, verify=True)
    assert [(v.version, v.kind) for v in ch.versions] == [
        ("v000001", "full"), ("v000002", "delta"), ("v000003", "delta")]
    want = reference_apply([base, d1, d2])
    for s in range(NUM_SHARDS):
        assert [v for v, _ in ch.iter_shard(s)] == ["v000001", "v000002", "v000003"]
    m = model_table(ch).export()  # the chain as SparseTable.load applies it
    got = {(int(k), int(s)): w for k, s, w, st in zip(m["key"], m["slot"], m["weights"], m["state"])
           if st == 0}
    assert got.keys() == want.keys()
    for f in want:
        assert got[f].tobytes() == want[f].tobytes()
    assert (int(base["key"][0]), int(base["slot"][0])) not in got
    assert (int(base["key"][50]), int(base["slot"][50])) in got


def test_reshard_two_servers_to_three(tmp_path):
    cols = make_cols(400, seed=11)
    commit(tmp_path, H0, "full", None, cols, num_servers=2, num_shards=6)
    ch = load_chain(tmp_path, num_shards=6)
    hosted = [shards_of_server(r, 6, 3) for r in range(3)]
    assert sorted(s for h in hosted for s in h) == list(range(6))
    assert hosted == [[0, 3], [1, 4], [2, 5]]
    loaded = concat([ch.read_shard("v000001", s) for h in hosted for s in h])
    order_a = np.lexsort((loaded["slot"], loaded["key"]))
    order_b = np.lexsort((cols["slot"], cols["key"]))
    assert_cols_equal(take(loaded, order_a), take(cols, order_b))


def test_num_shards_mismatch_names_both(tmp_path):
    commit(tmp_path, H0, "full", None, make_cols(20))
    with pytest.raises(ShardCountError, match=r"num_shards=4.*num_shards=8"):
        load_chain(tmp_path, num_shards=8)


def test_staged_delta_with_other_num_shards_is_refused(tmp_path):
    commit(tmp_path, H0, "full", None, make_cols(20))
    stage(tmp_path, H0 + 1, "delta", "v000001", make_cols(10, seed=1), num_shards=2)
    with pytest.raises(ShardCountError, match="num_shards=2.*num_shards=4"):
        save(tmp_path, H0 + 1)


def test_schema_errors_name_column(tmp_path):
    st = Stage.open(tmp_path, H0, "full", None, num_shards=2, dim=DIM, opt_width=K)
    bad = make_cols(5)
    bad["show"] = bad["show"].astype(np.float64)
    with pytest.raises(SchemaError, match="'show' expected float32"):
        st.write_shard(0, bad)
    bad = make_cols(5, dim=DIM + 1)
    with pytest.raises(SchemaError, match=r"'weights' expected float32\[5, 5\]"):
        st.write_shard(0, bad)
    with pytest.raises(SchemaError, match="missing column"):
        st.write_shard(0, {"key": np.zeros(1, np.uint64)})


def test_finish_requires_every_shard(tmp_path):
    st = Stage.open(tmp_path, H0, "full", None, num_shards=3, dim=DIM, opt_width=K)
    infos = [st.write_shard(0, make_cols(3)), st.write_dense({})]
    with pytest.raises(StagedVersionError, match=r"shard files \[0\]"):
        st.finish(infos)


def test_restaging_replaces_previous_attempt(tmp_path):
    first = make_cols(100, seed=12)
    stage(tmp_path, H0, "full", None, first)
    sdir = StoreLayout(tmp_path).staging_dir(H0)
    (sdir / ".shard-00001.parquet.tmp-999").write_bytes(b"half a file")
    second = make_cols(80, seed=13)
    st = Stage.open(tmp_path, H0, "full", None, num_shards=NUM_SHARDS, dim=DIM, opt_width=K)
    assert not (sdir / "meta.json").exists()  # the retry makes the folder incomplete first
    with pytest.raises(StagedVersionError, match="meta.json"):
        save(tmp_path, H0)
    infos = [st.write_shard(s, c) for s, c in enumerate(split_shards(second))]
    st.finish(infos + [st.write_dense(dense_arrays(1))])
    assert sorted(p.name for p in sdir.iterdir()) == sorted(
        ["dense.npz", "meta.json"] + [f"shard-0000{i}.parquet" for i in range(NUM_SHARDS)])
    save(tmp_path, H0)
    ch, rows = chain_rows(tmp_path, verify=True)
    for got, want in zip(rows[0], split_shards(second)):
        assert_cols_equal(got, want)


def test_empty_model_loads_as_empty_chain(tmp_path):
    ch = load_chain(tmp_path)
    assert len(ch) == 0 and ch.head is None


def test_writable_read(tmp_path):
    commit(tmp_path, H0, "full", None, make_cols(30))
    cols = load_chain(tmp_path).read_shard("v000001", 0, writable=True)
    assert all(a.flags.writeable and a.flags.c_contiguous for a in cols.values())


def _schema1_table(cols):
    """A shard as schema 1 wrote it: one float32 column per matrix element."""
    import pyarrow as pa
    from trainer.store import columns as C
    arrays = {name: pa.array(cols[name]) for name in C.SCALAR_COLUMNS}
    for name in ("weights", "opt_state"):
        for i in range(cols[name].shape[1]):
            arrays[f"{name}_{i}"] = pa.array(np.ascontiguousarray(cols[name][:, i]))
    return pa.table(arrays)


def test_a_chain_saved_with_schema_1_keeps_loading(tmp_path, monkeypatch):
    """A base written before schema 2 (element columns) and a delta written after load into the
    same columns as if both were schema 2."""
    import trainer.store.stage as stage_module
    from trainer.store import columns as C
    base, delta = make_cols(40, seed=1), make_cols(10, seed=2)
    with monkeypatch.context() as m:
        m.setattr(stage_module, "SCHEMA_VERSION", 1)
        m.setattr(C, "columns_to_table", _schema1_table)
        v1 = commit(tmp_path, H0, "full", None, base).version
    commit(tmp_path, H0 + 1, "delta", v1, delta)
    ch, got = chain_rows(tmp_path)
    assert [json.loads((v.dir / "meta.json").read_text())["schema_version"] for v in ch.versions] == [1, 2]
    assert pq.ParquetFile(ch.versions[0].dir / "shard-00000.parquet").schema_arrow.names[-1] == f"opt_state_{K - 1}"
    for version, want in zip(got, (base, delta)):
        assert_cols_equal(concat(version), concat(split_shards(want)))


def test_model_of_another_schema_version_is_refused_by_name(tmp_path):
    commit(tmp_path, H0, "full", None, make_cols(20))
    meta_path = next(tmp_path.glob("versions/*/meta.json"))
    meta = json.loads(meta_path.read_text())
    meta["schema_version"] = 3
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptFileError, match=r"version v000001 .*meta.json has schema_version 3, "
                                               r"expected one of \[1, 2\]"):
        load_chain(tmp_path)
