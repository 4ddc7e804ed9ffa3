import numpy as np
import pytest

from trainer.metrics import RELIABILITY_EDGES, ProgressiveMetrics, Reliability, exact_auc


def _data(n, seed):
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 8, n)
    y = (rng.random(n) < p).astype(np.float64)
    return y, p


def test_exact_auc_by_pairs():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60).astype(float)
    p = np.round(rng.random(60), 1)  # many ties
    w = rng.integers(1, 4, 60).astype(float)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    num = sum(w[i] * w[j] * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0) for i in pos for j in neg)
    assert exact_auc(y, p, w) == pytest.approx(num / (w[pos].sum() * w[neg].sum()))


@pytest.mark.parametrize("buckets", [1 << 16, 1000, 10])
def test_histogram_auc_within_reported_bound(buckets):
    y, p = _data(20_000, 2)
    m = ProgressiveMetrics(buckets)
    m.update(y, p)
    r = m.get()
    exact = exact_auc(y, p)
    assert abs(r["auc"] - exact) <= r["auc_error_bound"] + 1e-12
    if buckets == 1 << 16:
        assert abs(r["auc"] - exact) < 1e-4
    if buckets == 10:
        assert r["auc_error_bound"] > 1e-3  # coarse buckets are honest about it


def test_weighted_scalars_exact():
    y = np.array([1, 0, 0, 1.0])
    p = np.array([0.9, 0.2, 0.4, 0.3])
    w = np.array([2, 1, 1, 3.0])
    m = ProgressiveMetrics(1 << 10)
    m.update(y, p, w)
    r = m.get()
    assert r["rows"] == 4 and r["shows"] == 7 and r["clicks"] == 5
    assert r["actual_ctr"] == pytest.approx(5 / 7)
    assert r["pred_ctr"] == pytest.approx((1.8 + 0.2 + 0.4 + 0.9) / 7)
    ll = -(2 * np.log(0.9) + np.log(0.8) + np.log(0.6) + 3 * np.log(0.3)) / 7
    assert r["logloss"] == pytest.approx(ll)
    assert r["auc"] == pytest.approx(exact_auc(y, p, w))


def test_merge_and_state_sum_equal_one_pass_never_mean_of_aucs():
    y, p = _data(9000, 3)
    whole = ProgressiveMetrics(4096)
    whole.update(y, p)
    parts = [ProgressiveMetrics(4096) for _ in range(3)]
    # workers see very different data: per-worker AUCs average to something else
    order = np.argsort(p)
    for i, idx in enumerate(np.array_split(order, 3)):
        parts[i].update(y[idx], p[idx])
    reduced = ProgressiveMetrics.from_state(sum(part.state() for part in parts))
    merged = parts[0]
    merged.merge(parts[1]).merge(parts[2])
    for r in (reduced.get(), merged.get()):
        for k, v in whole.get().items():
            if k == "reliability":
                assert r[k]["shows"] == v["shows"]
                nulls = [x is None for x in v["pred_ctr"]]
                assert [x is None for x in r[k]["pred_ctr"]] == nulls and not all(nulls)
                both = [(a, b) for a, b in zip(r[k]["pred_ctr"], v["pred_ctr"]) if b is not None]
                assert [a for a, _ in both] == pytest.approx([b for _, b in both], rel=1e-12)
            else:
                assert r[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k
    mean_of_aucs = np.mean([ProgressiveMetrics.from_state(pt.state()).get()["auc"] for pt in parts[1:]])
    assert abs(mean_of_aucs - whole.get()["auc"]) > 0.01


def test_state_is_flat_float64_and_validated():
    m = ProgressiveMetrics(8)
    s = m.state()
    assert s.dtype == np.float64 and s.ndim == 1 and s.size == 2 * 8 + 6 + 30
    with pytest.raises(ValueError, match="num_buckets"):
        ProgressiveMetrics.from_state(np.zeros(7))
    with pytest.raises(ValueError, match="merge"):
        m.merge(ProgressiveMetrics(16))


def test_edges_single_label_and_bad_preds():
    m = ProgressiveMetrics(16)
    assert np.isnan(m.get()["auc"]) and np.isnan(m.get()["logloss"])
    m.update([1, 1], [0.0, 1.0])  # p exactly 0 and 1: clipped logloss, no inf
    assert np.isnan(m.get()["auc"]) and np.isfinite(m.get()["logloss"])
    with pytest.raises(ValueError, match="probabilities"):
        m.update([0], [1.5])
    with pytest.raises(ValueError, match="shape"):
        m.update([0, 1], [0.5])


def test_reliability_bins_are_exact_and_sum_to_the_hour():
    y, p = _data(5000, 4)
    w = np.random.default_rng(5).integers(1, 4, p.size).astype(float)
    m = ProgressiveMetrics(256)
    m.update(y, p, w)
    got = m.get()
    rel = got["reliability"]
    assert rel["edges"] == list(RELIABILITY_EDGES) and len(rel["shows"]) == 10
    for i in range(10):
        lo, hi = RELIABILITY_EDGES[i], RELIABILITY_EDGES[i + 1]
        inside = (p >= lo) & ((p < hi) | (i == 9))
        assert rel["shows"][i] == w[inside].sum()
        if inside.any():
            assert rel["pred_ctr"][i] == pytest.approx((w * p)[inside].sum() / w[inside].sum())
            assert rel["actual_ctr"][i] == pytest.approx((w * y)[inside].sum() / w[inside].sum())
            assert lo <= rel["pred_ctr"][i] <= hi
        else:
            assert rel["pred_ctr"][i] is None and rel["actual_ctr"][i] is None
    assert sum(rel["shows"]) == got["shows"]
    clicks = sum(a * n for a, n in zip(rel["actual_ctr"], rel["shows"]) if a is not None)
    assert clicks == pytest.approx(got["clicks"])
    assert got["copc"] == pytest.approx(got["clicks"] / (w * p).sum())


def test_reliability_edges_of_bins_and_merge():
    r = Reliability()
    r.update([1, 0, 1, 0], [0.0, 0.001, 0.5, 1.0])  # an edge opens its bin; p = 1 is the last bin
    got = r.get()
    assert got["shows"] == [1.0, 1.0, 0, 0, 0, 0, 0, 1.0, 0, 1.0]
    other = Reliability()
    other.update([1], [0.0005])
    assert r.merge(other).get()["actual_ctr"][0] == 1.0 and r.get()["shows"][0] == 2.0
    with pytest.raises(ValueError, match="reliability state"):
        Reliability(np.zeros(29))
