"""Property-based: random sequences of push / pull / end_day / save against the dict model, every
optimizer rule with show-scaled updates on and off (shows of 0, 0.5, 1, ... 3 per occurrence)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pstable import SparseTable
from tests.pstable.pstable_cases import ADMISSIONS, EDGE_KEYS, EVICTIONS, RULES, make_config
from tests.pstable.pstable_reference import RefTable, assert_same_state

KEYS = [int(k) for k in EDGE_KEYS] + [3, 4, 5, 1 << 40]
feature = st.tuples(st.sampled_from(KEYS), st.integers(0, 2))
push_op = st.tuples(
    st.just("push"),
    st.lists(st.tuples(feature, st.integers(0, 6).map(lambda s: s / 2), st.booleans(),
                       st.lists(st.integers(-8, 8), min_size=3, max_size=3)),
             min_size=0, max_size=12),
    st.integers(0, 30),
)
op = st.one_of(push_op, st.tuples(st.just("end_day"), st.integers(0, 60)),
               st.tuples(st.just("save")), st.tuples(st.just("pull"), st.lists(feature, max_size=8)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule=st.sampled_from(RULES), admission=st.sampled_from(sorted(ADMISSIONS)),
       eviction=st.sampled_from(sorted(EVICTIONS)), show_scale=st.booleans(),
       ops=st.lists(op, max_size=12))
def test_random_sequences_match_the_dict_model(rule, admission, eviction, show_scale, ops):
    cfg = make_config(rule, admission, eviction, dim=2, show_scale=show_scale)
    t, ref = SparseTable(cfg), RefTable(cfg)
    replica = SparseTable(cfg)  # follows through base + deltas
    hour = 0
    for o in ops:
        if o[0] == "push":
            items, dh = o[1], o[2]
            hour += dh
            n = len(items)
            keys = np.array([f[0] for f, _, _, _ in items], np.uint64)
            slots = np.array([f[1] for f, _, _, _ in items], np.int32)
            shows = np.array([s for _, s, _, _ in items], np.float32)
            clicks = np.array([s if c else 0 for _, s, c, _ in items], np.float32)
            grads = np.array([g for _, _, _, g in items], np.float32).reshape(n, 3) / 4
            assert tuple(t.push(keys, slots, shows, clicks, grads, hour)) == \
                ref.push(keys, slots, shows, clicks, grads, hour)
        elif o[0] == "end_day":
            hour += o[1]
            got = t.end_day(hour)
            assert sorted(zip(got["slot"].tolist(), got["key"].tolist())) == sorted(ref.end_day(hour))
        elif o[0] == "save":
            replica.load(t.export(changed_only=True))
            t.mark_saved()
            a, b = t.export(), replica.export()
            order_a = np.lexsort((a["key"], a["slot"], a["state"]))
            order_b = np.lexsort((b["key"], b["slot"], b["state"]))
            for name in a:
                assert a[name][order_a].tobytes() == b[name][order_b].tobytes(), name
        else:
            keys = np.array([k for k, _ in o[1]], np.uint64)
            slots = np.array([s for _, s in o[1]], np.int32)
            np.testing.assert_array_equal(t.pull(keys, slots), ref.pull(keys, slots))
        assert_same_state(t, ref)
    assert t.counters() == ref.counters
