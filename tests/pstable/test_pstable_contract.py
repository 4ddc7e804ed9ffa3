"""The shared contract suite: every optimizer rule x admission policy x eviction policy, with
show-scaled updates on and off, checked against the pure-Python reference
(pstable_reference.RefTable) bit for bit."""

import zlib

import numpy as np

from pstable import SparseTable
from tests.pstable.pstable_cases import EDGE_KEYS, SHOW_SCALE, make_config
from tests.pstable.pstable_reference import RefTable, assert_same_state, export_as_dict


def case_config(case):
    rule, admission, eviction, scaling = case
    return make_config(rule, admission, eviction, show_scale=SHOW_SCALE[scaling])


def _batch(rng, universe, n, W, grad_scale=1.0):
    """A push of n features drawn from universe; shows of 0 and below 1 among them (a weight
    of 0.5, or none), so show scaling meets every case of its divisor."""
    idx = rng.integers(0, len(universe), n)
    keys = universe[idx, 0].astype(np.uint64)
    slots = universe[idx, 1].astype(np.int32)
    shows = rng.choice(np.array([0.0, 0.5, 1.0, 1.0, 2.0, 3.0], np.float32), n)
    clicks = (rng.random(n) < 0.3).astype(np.float32) * shows
    grads = (rng.standard_normal((n, W)) * grad_scale).astype(np.float32)
    return keys, slots, shows, clicks, grads


def _universe(rng, n):
    keys = np.concatenate([EDGE_KEYS, rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)])
    slots = rng.integers(0, 3, len(keys))
    return np.stack([keys.astype(object), slots.astype(object)], axis=1)


def test_contract_against_reference(case):
    cfg = case_config(case)
    t, ref = SparseTable(cfg), RefTable(cfg)
    rng = np.random.default_rng(zlib.crc32("-".join(case).encode()))
    universe = _universe(rng, 60)
    W = cfg.dim + 1
    hour = 1000
    for step in range(14):
        batch = _batch(rng, universe, int(rng.integers(1, 80)), W)
        res = t.push(*batch, hour=hour)
        assert tuple(res) == ref.push(*batch, hour=hour), f"PushResult at step {step}"
        keys, slots = batch[0], batch[1]
        np.testing.assert_array_equal(t.pull(keys, slots), ref.pull(keys, slots))
        assert_same_state(t, ref)
        if step % 5 == 4:
            hour += 24
            got = t.end_day(hour)
            want = ref.end_day(hour)
            assert sorted(zip(got["slot"].tolist(), got["key"].tolist())) == sorted(want)
            assert_same_state(t, ref)
            hour += 1
        else:
            hour += int(rng.integers(0, 3))
    assert t.counters() == ref.counters
    # pull of everything: unknown and pending read as zeros
    allk = universe[:, 0].astype(np.uint64)
    alls = universe[:, 1].astype(np.int32)
    np.testing.assert_array_equal(t.pull(allk, alls), ref.pull(allk, alls))


def test_export_load_round_trip_is_bit_identical(case):
    cfg = case_config(case)
    t = SparseTable(cfg)
    rng = np.random.default_rng(1)
    universe = _universe(rng, 200)
    for hour in range(100, 106):
        t.push(*_batch(rng, universe, 300, cfg.dim + 1), hour=hour)
    t.end_day(130)
    cols = t.export()
    t2 = SparseTable(cfg)
    t2.load(cols)
    cols2 = t2.export()
    assert cols.keys() == cols2.keys()
    for name in cols:
        assert cols[name].dtype == cols2[name].dtype
        assert cols[name].tobytes() == cols2[name].tobytes(), name
    # the loaded table behaves the same from here on
    batch = _batch(rng, universe, 300, cfg.dim + 1)
    assert t.push(*batch, hour=140) == t2.push(*batch, hour=140)
    assert export_as_dict(t.export()).keys() == export_as_dict(t2.export()).keys()
    for name, a in t.export().items():
        assert a.tobytes() == t2.export()[name].tobytes(), name


def test_base_plus_deltas_reproduce_the_table(case):
    """A full export, then changed-only exports (with tombstones) applied in order == the table."""
    cfg = case_config(case)
    t = SparseTable(cfg)
    rng = np.random.default_rng(2)
    universe = _universe(rng, 150)
    W = cfg.dim + 1
    t.push(*_batch(rng, universe, 200, W), hour=10)
    replica = SparseTable(cfg)
    replica.load(t.export())
    t.mark_saved()
    hour = 11
    for day in range(3):
        for _ in range(4):
            t.push(*_batch(rng, universe[: 40 + 30 * day], 50, W), hour=hour)
            hour += 1
            delta = t.export(changed_only=True)
            replica.load(delta)
            t.mark_saved()
        hour += 24
        t.end_day(hour)
        delta = t.export(changed_only=True)
        replica.load(delta)
        t.mark_saved()
        a, b = export_as_dict(t.export()), export_as_dict(replica.export())
        assert a.keys() == b.keys()
        for feat in a:
            for x, y in zip(a[feat], b[feat]):
                assert np.array_equal(x, y), feat
    assert t.export(changed_only=True)["key"].size == 0


def test_replay_is_deterministic_across_sharding(case):
    """Initial values depend on (key, slot, seed) only: one table or two shards, any batch order."""
    cfg = case_config(case)
    rng = np.random.default_rng(3)
    universe = _universe(rng, 100)
    keys, slots, shows, clicks, grads = _batch(rng, universe, 400, cfg.dim + 1)
    whole = SparseTable(cfg)
    whole.push(keys, slots, shows, clicks, grads, hour=5)
    parts = [SparseTable(cfg), SparseTable(cfg)]
    owner = (keys % np.uint64(2)).astype(int)
    for o in (1, 0):
        m = owner == o
        parts[o].push(keys[m], slots[m], shows[m], clicks[m], grads[m], hour=5)
    want = export_as_dict(whole.export())
    got = {**export_as_dict(parts[0].export()), **export_as_dict(parts[1].export())}
    assert want.keys() == got.keys()
    for feat in want:
        for x, y in zip(want[feat], got[feat]):
            assert np.array_equal(x, y)
