"""Edge keys, slots, duplicates, growth, admission details, eviction counts, delta marking."""

import numpy as np
import pytest

from pstable import SparseTable, TableConfig, feature_hash
from tests.pstable.pstable_cases import EDGE_KEYS, make_config
from tests.pstable.pstable_reference import RefTable, assert_same_state, init_embedding, init_embedding_vec


def _push(t, keys, slots=None, hour=0, show=1.0, click=0.0, grad=0.0):
    keys = np.asarray(keys, dtype=np.uint64)
    n = len(keys)
    slots = np.zeros(n, np.int32) if slots is None else np.asarray(slots, np.int32)
    W = t.config.dim + 1
    g = np.full((n, W), grad, np.float32) if np.isscalar(grad) else np.asarray(grad, np.float32)
    return t.push(keys, slots, np.full(n, show, np.float32), np.full(n, click, np.float32), g, hour)


def test_edge_keys_are_distinct_rows_and_int64_is_viewed_as_uint64():
    cfg = make_config("sgd", "none", dim=3)
    t = SparseTable(cfg)
    signed = np.array([0, -1, np.iinfo(np.int64).min, np.iinfo(np.int64).max], np.int64)
    res = _push(t, signed.view(np.uint64), grad=0.0)
    assert res.created == 4 and len(t) == 4
    # int64 input reads the same rows as the uint64 view
    a = t.pull(signed, np.zeros(4, np.int32))
    b = t.pull(signed.view(np.uint64), np.zeros(4, np.int32))
    assert np.array_equal(a, b)
    assert len({row.tobytes() for row in a}) == 4
    assert t.pull(np.array([2**64 - 1], np.uint64))[0].tobytes() == a[1].tobytes()
    for i, k in enumerate(signed.view(np.uint64).tolist()):
        assert np.array_equal(a[i, 1:], init_embedding(k, 0, cfg.seed, 3, 0.01))
        assert a[i, 0] == 0.0
    got = t.export()
    assert sorted(got["key"].tolist()) == sorted(signed.view(np.uint64).tolist())


def test_same_key_in_two_slots_never_shares_a_row():
    t = SparseTable(make_config("sgd", "none"))
    keys = np.array([42, 42, 42], np.uint64)
    slots = np.array([0, 1, -7], np.int32)
    assert _push(t, keys, slots, grad=1.0).created == 3
    out = t.pull(keys, slots)
    assert len({r.tobytes() for r in out}) == 3
    _push(t, [42], [1], grad=1.0)
    after = t.pull(keys, slots)
    assert np.array_equal(after[[0, 2]], out[[0, 2]]) and not np.array_equal(after[1], out[1])


def test_duplicates_in_a_batch_are_summed_before_the_optimizer():
    cfg = make_config("adagrad", "none", dim=2)
    a, b = SparseTable(cfg), SparseTable(cfg)
    g = np.array([[1, 2, 3], [0.5, -1, 2], [1, 1, 1]], np.float32)
    res = _push(a, [5, 5, 5], grad=g, show=2.0, click=1.0)
    assert tuple(res) == (1, 0, 0)
    _push(b, [5], grad=g.sum(0, keepdims=True), show=6.0, click=3.0)
    assert a.export()["weights"].tobytes() == b.export()["weights"].tobytes()
    assert a.export()["show"][0] == 6.0 and a.export()["click"][0] == 3.0
    assert tuple(_push(a, [5, 5, 6], grad=0.0)) == (1, 0, 1)


def test_growth_past_many_resizes_keeps_every_row():
    cfg = make_config("sgd", "none", dim=2, seed=7)
    t = SparseTable(cfg)
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 2**64 - 1, 150_000, dtype=np.uint64, endpoint=True))
    keys = np.concatenate([EDGE_KEYS, keys[~np.isin(keys, EDGE_KEYS)]])
    slots = (keys % np.uint64(3)).astype(np.int32)
    mem0 = t.memory_bytes()
    for lo in range(0, len(keys), 9_000):  # 64 buckets -> 262144: a dozen rehashes
        _push(t, keys[lo:lo + 9_000], slots[lo:lo + 9_000])
    assert len(t) == len(keys)
    assert t.memory_bytes() > mem0
    out = t.pull(keys, slots)
    assert np.array_equal(out[:, 0], np.zeros(len(keys), np.float32))
    assert np.array_equal(out[:, 1:], init_embedding_vec(keys, slots, 7, 2, 0.01))
    # an unknown slot of the same keys reads zeros and creates nothing
    assert not t.pull(keys, slots + 5).any() and len(t) == len(keys)


@pytest.mark.parametrize("admission", ["none", "count_filter"])
def test_one_push_of_many_new_features_keeps_probe_paths_short(admission):
    # push applies in hash order, so an index grown only at 3/4 of the whole would fill up
    # front to back and end in one cluster (and a quadratic push: 90 s for 1M keys)
    t = SparseTable(make_config("sgd", admission, dim=2))
    keys = np.random.default_rng(1).integers(0, 2**64 - 1, 200_000, dtype=np.uint64)
    _push(t, keys)
    _push(t, keys[:100_000])
    assert len(t) + t.num_pending == len(keys)
    stats = t.index_stats()
    for index in stats.values():
        assert index["insert_walk"] < 2 * index["entries"] + 64, stats
        assert index["mean_probe"] < 2.0 and index["max_probe"] < 100, stats
    assert stats["rows" if admission == "none" else "pending"]["entries"] == len(keys)


def test_pull_creates_nothing_and_pending_reads_as_zeros():
    t = SparseTable(make_config("adagrad", "count_filter"))  # count = 3
    keys = np.array([1, 2, 3], np.uint64)
    assert not t.pull(keys).any() and len(t) == 0 and t.num_pending == 0
    assert tuple(_push(t, keys, grad=1.0)) == (0, 3, 0)
    assert len(t) == 0 and t.num_pending == 3 and not t.pull(keys).any()
    _push(t, [1], show=1.0, grad=1.0)
    res = _push(t, [1, 2], show=1.0, grad=1.0)  # key 1 reaches 3 shows: admitted, key 2 has 2
    assert tuple(res) == (1, 1, 0)
    row = t.export()
    i = list(row["key"]).index(1)
    assert row["state"][i] == 0 and row["show"][i] == 3.0
    # the admitting push's gradient was applied (w moved from 0), earlier ones were dropped
    w = t.pull(np.array([1], np.uint64))[0, 0]
    assert w == pytest.approx(-0.05, abs=1e-6)
    assert t.num_pending == 2


def test_count_filter_counts_shows_in_one_push_and_decay_applies_to_pending():
    t = SparseTable(make_config("sgd", "count_filter"))
    assert tuple(_push(t, [9, 9, 9])) == (1, 0, 0)  # three shows in one push reach count 3
    _push(t, [10, 10])
    t.end_day(24)  # pending show 2 -> 1.8
    assert tuple(_push(t, [10], hour=25)) == (0, 1, 0)  # 2.8 < 3
    assert tuple(_push(t, [10], hour=25)) == (1, 0, 0)


def test_probability_admission_is_one_deterministic_draw_per_hour():
    cfg = make_config("sgd", "probability")  # p = 0.4
    keys = np.arange(2000, dtype=np.uint64)
    a, b = SparseTable(cfg), SparseTable(cfg)
    ra = _push(a, keys, hour=77)
    assert _push(a, keys, hour=77).created == 0  # same hour: same draw, nothing new
    rb = _push(b, keys[::-1].copy(), hour=77)
    assert ra.created == rb.created and 0.33 < ra.created / 2000 < 0.47
    assert np.array_equal(np.sort(a.export()["key"][a.export()["state"] == 0]),
                          np.sort(b.export()["key"][b.export()["state"] == 0]))
    more = _push(a, keys, hour=78).created  # a new hour: a new draw for the rest
    assert 0.3 < more / (2000 - ra.created) < 0.5
    other = SparseTable(make_config("sgd", "probability", seed=1))
    _push(other, keys, hour=77)
    assert not np.array_equal(np.sort(other.export()["key"][other.export()["state"] == 0]),
                              np.sort(b.export()["key"][b.export()["state"] == 0]))


def test_show_click_admission_uses_the_score():
    t = SparseTable(make_config("sgd", "show_click"))  # threshold 1.5, nonclk 0.1, click 1
    assert tuple(_push(t, [1], show=10.0, click=1.0)) == (1, 0, 0)  # 9 * 0.1 + 1 = 1.9
    assert tuple(_push(t, [2], show=5.0)) == (0, 1, 0)  # 0.5
    assert tuple(_push(t, [2], show=5.0)) == (0, 1, 0)  # 1.0
    assert tuple(_push(t, [2], show=5.0)) == (1, 0, 0)  # 1.5 >= 1.5
    assert t.export()["show"].tolist() == [10.0, 15.0]


def test_clipping_to_weight_bounds():
    t = SparseTable(make_config("sgd", "none", dim=2))  # bounds 0.5, lr 0.05
    _push(t, [1, 2], grad=np.array([[100, -100, 100], [-1, 1, 0]], np.float32))
    out = t.pull(np.array([1, 2], np.uint64))
    assert list(out[0]) == [-0.5, 0.5, -0.5]
    assert out[1, 0] == pytest.approx(0.05)


def test_eviction_by_unseen_days_counts_rows_and_pending():
    t = SparseTable(make_config("sgd", "count_filter", "unseen_days"))  # > 1 unseen day evicts
    _push(t, [1, 2, 3], show=3.0, hour=0)     # rows
    _push(t, [4], show=1.0, hour=0)           # pending
    _push(t, [2], show=1.0, hour=30)
    _push(t, [5], show=1.0, hour=30)          # pending, recent
    ev = t.end_day(48)                        # unseen days: 2, 0, 2, pending 4: 2, pending 5: 0
    assert sorted(ev["key"].tolist()) == [1, 3] and ev["key"].dtype == np.uint64
    assert ev["slot"].dtype == np.int32
    assert len(t) == 1 and t.num_pending == 1
    c = t.counters()
    assert c["evicted"] == 2 and c["evicted_pending"] == 1
    assert t.end_day(48 + 24)["key"].size == 0  # row 2 last seen 30: (72 - 30) // 24 = 1, kept
    assert t.end_day(48 + 48)["key"].tolist() == [2]


def test_end_day_shrinks_an_index_left_oversized_by_admissions():
    t = SparseTable(make_config("sgd", "count_filter"))  # count = 3
    keys = np.arange(50_000, dtype=np.uint64)
    _push(t, keys, show=1.0)                 # all pending: the pending index grows
    peak = t.index_stats()["pending"]["buckets"]
    _push(t, keys[:49_000], show=2.0)        # admitted: pending entries removed, index stays
    assert t.num_pending == 1000 and t.index_stats()["pending"]["buckets"] == peak
    before = t.pull(keys)
    assert t.end_day(1)["key"].size == 0
    assert t.index_stats()["pending"]["buckets"] < peak // 8
    assert t.memory_breakdown()["pending_index"] == 8 * t.index_stats()["pending"]["buckets"]
    assert np.array_equal(t.pull(keys), before) and t.num_pending == 1000
    _push(t, keys[49_000:], show=3.0)        # the shrunk index still finds the pending entries
    assert len(t) == 50_000 and t.num_pending == 0


def test_eviction_by_score_and_zero_means_never():
    cfg = make_config("sgd", "none", "score")  # delete_threshold 0.5, unseen days 0 = never
    t = SparseTable(cfg)
    _push(t, [1], show=1.0, click=1.0)   # score 1.0 -> 0.9 after decay: kept
    _push(t, [2], show=4.0, click=0.0)   # score 0.4 -> 0.36: evicted
    assert t.end_day(10_000)["key"].tolist() == [2]
    assert len(t) == 1


def test_delta_marking_and_tombstones():
    t = SparseTable(make_config("adagrad", "count_filter", "unseen_days"))
    _push(t, [1, 2, 3], show=3.0, hour=0)
    _push(t, [7], show=1.0, hour=0)  # pending
    full = t.export(changed_only=True)
    assert sorted(zip(full["state"].tolist(), full["key"].tolist())) == [(0, 1), (0, 2), (0, 3), (1, 7)]
    t.mark_saved()
    assert t.export(changed_only=True)["key"].size == 0
    _push(t, [2], hour=5, grad=1.0)
    _push(t, [7], hour=5)
    d = t.export(changed_only=True)
    assert sorted(zip(d["state"].tolist(), d["key"].tolist())) == [(0, 2), (1, 7)]
    t.mark_saved()
    ev = t.end_day(60)  # 1 and 3 unseen 2 days -> evicted; 2 and pending 7 unseen 2 days as well
    assert sorted(ev["key"].tolist()) == [1, 2, 3]
    d = t.export(changed_only=True)
    assert d["state"].tolist() == [2, 2, 2, 2]  # tombstones first (3 rows + the pending entry)
    assert sorted(d["key"].tolist()) == [1, 2, 3, 7]
    assert not d["weights"].any() and not d["opt_state"].any()
    # full export never carries tombstones
    assert t.export()["key"].size == 0
    # a re-seen feature after eviction: tombstone first, then its new pending state
    _push(t, [1], hour=61)
    d = t.export(changed_only=True)
    assert d["state"].tolist()[:4] == [2, 2, 2, 2] and d["state"].tolist()[4:] == [1]
    t.mark_saved()
    assert t.export(changed_only=True)["key"].size == 0


def test_load_semantics_in_order():
    cfg = make_config("sgd", "none", dim=1)
    t = SparseTable(cfg)
    cols = dict(key=np.array([1, 1, 2, 2, 3], np.uint64), slot=np.zeros(5, np.int32),
                state=np.array([1, 0, 0, 2, 1], np.uint8),
                show=np.arange(5, dtype=np.float32), click=np.zeros(5, np.float32),
                last_seen=np.arange(5, dtype=np.int32),
                weights=np.arange(10, dtype=np.float32).reshape(5, 2),
                opt_state=np.zeros((5, 0), np.float32))
    t.load(cols)
    out = t.export()
    assert list(zip(out["state"].tolist(), out["key"].tolist())) == [(0, 1), (1, 3)]
    assert out["weights"][0].tolist() == [2.0, 3.0] and out["show"][0] == 1.0
    assert t.export(changed_only=True)["key"].size == 0  # loaded = saved
    # a pending entry replaces a row of the same feature
    t.load({**{k: v[:1] for k, v in cols.items()}})
    assert len(t) == 0 and t.num_pending == 2


def test_reference_agrees_on_a_long_mixed_run():
    cfg = make_config("adam", "show_click", "score", dim=5)
    t, ref = SparseTable(cfg), RefTable(cfg)
    rng = np.random.default_rng(11)
    keys = np.concatenate([EDGE_KEYS, rng.integers(0, 2**64 - 1, 30, dtype=np.uint64)])
    for hour in range(40):
        idx = rng.integers(0, len(keys), 25)
        batch = (keys[idx], rng.integers(0, 2, 25).astype(np.int32),
                 np.ones(25, np.float32), (rng.random(25) < 0.5).astype(np.float32),
                 rng.standard_normal((25, 6)).astype(np.float32))
        assert tuple(t.push(*batch, hour=hour)) == ref.push(*batch, hour=hour)
        if hour % 24 == 23:
            t.end_day(hour + 1)
            ref.end_day(hour + 1)
    assert_same_state(t, ref)


def test_feature_hash_is_not_the_sharding_hash():
    """The index hash is salted: features of one shard must not share low hash bits."""
    keys = np.arange(100_000, dtype=np.uint64)
    slots = np.zeros(len(keys), np.int32)
    z = slots.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ keys
    for sh, m in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        z = (z ^ (z >> np.uint64(sh))) * np.uint64(m)
    z ^= z >> np.uint64(31)
    shard0 = (z % np.uint64(8)) == 0
    h = feature_hash(keys[shard0], slots[shard0])
    assert len(np.unique(h % np.uint64(8))) == 8
    assert len(np.unique(h >> np.uint64(61))) == 8  # the home bucket uses the top bits


def test_memory_and_counters_report():
    t = SparseTable(TableConfig(dim=8))
    assert t.memory_bytes() > 0 and t.counters() == dict(created=0, filtered=0, updated=0,
                                                          evicted=0, evicted_pending=0)
    _push(t, np.arange(50_000))
    b = t.memory_breakdown()
    assert sum(b.values()) == t.memory_bytes()
    assert b["rows"] >= 50_000 * t.row_bytes
    assert t.payload_bytes == 24 + 4 * (9 + 2)
    t.release_scratch()
    assert t.memory_breakdown()["scratch"] == 0


def test_pending_entries_loaded_into_a_policy_none_table_are_admitted_with_their_counters():
    src = SparseTable(make_config("sgd", "count_filter"))
    _push(src, [1, 2], show=1.0, click=1.0)
    dst = SparseTable(make_config("sgd", "none"))
    dst.load(src.export())
    assert dst.num_pending == 2
    assert tuple(_push(dst, [1, 1, 3], show=1.0)) == (2, 0, 0)
    cols = dst.export()
    got = dict(zip(zip(cols["state"].tolist(), cols["key"].tolist()), cols["show"].tolist()))
    assert got == {(0, 1): 3.0, (0, 3): 1.0, (1, 2): 1.0}


def test_deletion_through_load_keeps_every_other_row_findable():
    """Tombstones and pending entries loaded over rows delete from the index (backward shift)."""
    cfg = make_config("adagrad", "none", dim=2)
    t = SparseTable(cfg)
    rng = np.random.default_rng(5)
    n = 40_000
    keys = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    slots = rng.integers(0, 4, n).astype(np.int32)
    _push(t, keys, slots, grad=0.5)
    before = t.pull(keys, slots)
    cols = t.export()
    drop = rng.random(len(cols["key"])) < 0.5
    state = cols["state"].copy()
    state[drop] = rng.choice([1, 2], drop.sum()).astype(np.uint8)
    t.load({**cols, "state": state, "weights": np.where(drop[:, None], 0, cols["weights"]),
            "opt_state": np.where(drop[:, None], 0, cols["opt_state"])})
    feat_gone = set(zip(cols["slot"][drop].tolist(), cols["key"][drop].tolist()))
    gone = np.array([(s, k) in feat_gone for s, k in zip(slots.tolist(), keys.tolist())])
    after = t.pull(keys, slots)
    assert np.array_equal(after[~gone], before[~gone])
    assert not after[gone].any()
    assert len(t) == int((~drop).sum()) and t.num_pending == int((state == 1).sum())


def test_slots_none_means_slot_zero_and_reserve_presizes():
    t = SparseTable(make_config("sgd", "none", dim=2))
    t.reserve(100_000)
    grown = t.memory_breakdown()
    assert grown["rows_index"] >= 100_000 * 8 * 4 // 3 and len(t) == 0
    keys = np.arange(1000, dtype=np.uint64)
    t.push(keys, None, np.ones(1000, np.float32), np.zeros(1000, np.float32),
           np.zeros((1000, 3), np.float32), 0)
    assert np.array_equal(t.pull(keys), t.pull(keys, np.zeros(1000, np.int32)))
    assert not t.pull(keys, np.ones(1000, np.int32)).any()
    assert t.memory_breakdown()["rows_index"] == grown["rows_index"]  # no rehash after reserve
    with pytest.raises(RuntimeError, match="already initialised"):
        t.__init__(t.config)


def test_merge_table_outgrown_by_a_push_with_more_unique_features():
    """The push-local merge table is sized from the previous push's unique fraction; a push with
    far more unique features refills it at full size, with the same result as the reference."""
    cfg = make_config("adagrad", "count_filter", dim=3)
    t, ref = SparseTable(cfg), RefTable(cfg)
    rng = np.random.default_rng(11)
    for n, n_distinct in ((3000, 2), (5000, 4000), (4000, 4), (6000, 6000)):
        universe = rng.integers(0, 2**64 - 1, n_distinct, dtype=np.uint64, endpoint=True)
        keys = universe[rng.integers(0, n_distinct, n)]
        slots = rng.integers(0, 2, n).astype(np.int32)
        shows = np.ones(n, np.float32)
        clicks = (rng.random(n) < 0.2).astype(np.float32)
        grads = rng.standard_normal((n, 4)).astype(np.float32)
        assert tuple(t.push(keys, slots, shows, clicks, grads, hour=5)) == \
            ref.push(keys, slots, shows, clicks, grads, hour=5)
        assert_same_state(t, ref)


def _load_stream(rng, n, feats, dim):
    """n load entries over a few features (many duplicates: next to each other, in one pipeline
    group, across groups) with random states and values."""
    pick = rng.integers(0, len(feats[0]), n)
    pick[1::7] = pick[0::7][:len(pick[1::7])]          # adjacent duplicates
    return dict(key=feats[0][pick], slot=feats[1][pick],
                state=rng.choice([0, 0, 0, 1, 2], n).astype(np.uint8),
                show=rng.random(n, dtype=np.float32), click=rng.random(n, dtype=np.float32),
                last_seen=rng.integers(0, 1000, n).astype(np.int32),
                weights=rng.standard_normal((n, 1 + dim), dtype=np.float32),
                opt_state=rng.random((n, 2), dtype=np.float32))


def _apply_in_order(model, cols):
    """The contract of load, one entry at a time: {(slot, key): (state, i)} of the winning entry."""
    for i in range(len(cols["key"])):
        f = (int(cols["slot"][i]), int(cols["key"][i]))
        if cols["state"][i] == 2:
            model.pop(f, None)
        else:
            model[f] = (int(cols["state"][i]), cols, i)


@pytest.mark.parametrize("n_feats", [3, 40, 5_000])
def test_load_duplicates_in_one_call_apply_in_order(n_feats):
    """A later entry of a feature wins, also inside one call's prefetch pipeline (same group, next
    group, far apart), over rows and pending entries there before the call; loading entry by
    entry gives the same table, row order included."""
    dim = 3
    rng = np.random.default_rng(n_feats)
    feats = (rng.integers(0, 2**64 - 1, n_feats, dtype=np.uint64, endpoint=True),
             rng.integers(0, 3, n_feats).astype(np.int32))
    cfg = make_config("adagrad", "count_filter", dim=dim)
    base = _load_stream(rng, 3 * n_feats, feats, dim)
    stream = _load_stream(rng, 20 * n_feats + 100, feats, dim)
    whole, one_by_one = SparseTable(cfg), SparseTable(cfg)
    model = {}
    for cols in (base, stream):
        whole.load(cols)
        _apply_in_order(model, cols)
    one_by_one.load(base)
    for i in range(len(stream["key"])):
        one_by_one.load({c: a[i:i + 1] for c, a in stream.items()})
    got, ref = whole.export(), one_by_one.export()
    for c in got:
        assert np.array_equal(got[c], ref[c]), c
    assert len(whole) + whole.num_pending == len(model)
    assert whole.export(changed_only=True)["key"].size == 0
    for j in range(len(got["key"])):
        st, cols, i = model[(int(got["slot"][j]), int(got["key"][j]))]
        assert got["state"][j] == st
        for c in ("show", "click", "last_seen"):
            assert got[c][j] == cols[c][i], c
        if st == 0:
            assert np.array_equal(got["weights"][j], cols["weights"][i])
            assert np.array_equal(got["opt_state"][j], cols["opt_state"][i])
    # every entry is findable through the index after all the moves
    keys = np.array([k for _, k in model], np.uint64)
    slots = np.array([s for s, _ in model], np.int32)
    rows = np.array([model[f][0] == 0 for f in model])
    w = whole.pull(keys, slots)
    want = np.array([model[f][1]["weights"][model[f][2]] if model[f][0] == 0 else np.zeros(1 + dim)
                     for f in model], np.float32)
    assert np.array_equal(w, want) and int(rows.sum()) == len(whole)


def test_docstring_examples_of_the_compiled_module_run():
    import doctest
    import sys

    compiled = sys.modules[SparseTable.__module__]
    result = doctest.testmod(compiled)
    assert result.attempted >= 2 and result.failed == 0


@pytest.mark.parametrize("rule", ["sgd", "adagrad", "adam"])
@pytest.mark.parametrize("dim", [1, 2, 3, 4, 7])
def test_every_row_width_copies_exactly(rule, dim):
    """Rows of every width (the SSE copies take widths < 4, = 4 and with a ragged tail
    differently): pull and push's merge agree with the reference, load copies bit for bit."""
    cfg = make_config(rule, "none", dim=dim)
    t, ref = SparseTable(cfg), RefTable(cfg)
    rng = np.random.default_rng(dim)
    keys = rng.integers(0, 50, 400).astype(np.uint64)  # duplicates: merged sums
    grads = rng.standard_normal((400, 1 + dim)).astype(np.float32)
    args = (keys, np.zeros(400, np.int32), np.ones(400, np.float32), np.zeros(400, np.float32),
            grads, 10)
    t.push(*args)
    ref.push(*args)
    query = np.arange(60, dtype=np.uint64)  # 50..59 unknown: zero rows
    got = t.pull(query)
    np.testing.assert_array_equal(got, ref.pull(query, np.zeros(60, np.int32)))
    assert not got[50:].any() and got[:50].all(axis=1).any()
    loaded = SparseTable(cfg)
    loaded.load(t.export())
    assert loaded.pull(query).tobytes() == t.pull(query).tobytes()
    assert all(a.tobytes() == b.tobytes() for a, b in zip(loaded.export().values(), t.export().values()))
