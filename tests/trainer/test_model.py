import numpy as np
import pytest

from trainer.model import (DenseLayout, DenseOptimizer, backward, flatten, forward, init_dense, log_loss,
                           pool, sigmoid, train_step, unflatten, unpool_grads)
from trainer.reader import Batch, dedup

LAYOUT = DenseLayout(num_fields=3, dim=4, dense_dim=2, hidden=(6, 5))


def _loss64(params, pooled, dense_x, wide, y, w):
    probs, cache = forward(params, pooled, dense_x, wide)
    return log_loss(cache["logits"], y, w)


def _inputs(n=7, seed=0):
    rng = np.random.default_rng(seed)
    pooled = rng.normal(size=(n, LAYOUT.num_fields * LAYOUT.dim))
    dense_x = rng.normal(size=(n, LAYOUT.dense_dim))
    wide = rng.normal(size=n) * 0.3
    y = rng.integers(0, 2, n).astype(np.float64)
    w = rng.integers(1, 4, n).astype(np.float64)
    return pooled, dense_x, wide, y, w


def _params64(seed=3):
    p = init_dense(LAYOUT, seed)
    rng = np.random.default_rng(seed)
    # non-zero biases and a larger output layer so every path carries gradient
    return {k: (v + 0.1 * rng.normal(size=v.shape)).astype(np.float64) for k, v in p.items()}


@pytest.mark.parametrize("weighted", [False, True])
def test_dense_backward_matches_finite_differences(weighted):
    params = _params64()
    pooled, dense_x, wide, y, w = _inputs()
    w = w if weighted else None
    _, cache = forward(params, pooled, dense_x, wide)
    grads, d_pooled, d_wide = backward(params, cache, y, w)
    eps = 1e-6
    for name, p in params.items():
        num = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            up = _loss64(params, pooled, dense_x, wide, y, w)
            p[idx] = old - eps
            down = _loss64(params, pooled, dense_x, wide, y, w)
            p[idx] = old
            num[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[name], num, rtol=1e-5, atol=1e-8, err_msg=name)
    for arr, d in ((pooled, d_pooled), (wide, d_wide)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = _loss64(params, pooled, dense_x, wide, y, w)
            arr[idx] = old - eps
            down = _loss64(params, pooled, dense_x, wide, y, w)
            arr[idx] = old
            num[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(d, num, rtol=1e-5, atol=1e-8)


def _sparse_case(seed=5):
    """A batch with duplicate features, a shared id across slot columns and an example with none."""
    rng = np.random.default_rng(seed)
    n, F, dim = 5, LAYOUT.num_fields, LAYOUT.dim
    example = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 4], np.int32)  # example 3 has no feature
    field = np.array([0, 1, 1, 0, 2, 0, 1, 2, 2, 1], np.int32)
    keys = np.array([1, 2, 2, 1, 9, 3, 2, 2**64 - 1, 0, 2], np.uint64)
    slots = field.copy()
    batch = Batch(labels=rng.integers(0, 2, n).astype(np.float32), shows=np.ones(n, np.float32),
                  dense=rng.normal(size=(n, LAYOUT.dense_dim)).astype(np.float32), keys=keys, slots=slots,
                  field=field, example=example)
    d = dedup(batch)
    rows = rng.normal(size=(len(d.keys), 1 + dim)) * 0.5
    return batch, d, rows, n, F, dim


def test_sparse_pool_unpool_match_finite_differences():
    params = _params64()
    batch, d, rows, n, F, dim = _sparse_case()
    y = batch.labels.astype(np.float64)
    dense_x = batch.dense.astype(np.float64)

    def loss_of(r):
        pooled, wide = pool(r, d.inverse, batch.example, batch.field, n, F)
        return _loss64(params, pooled, dense_x, wide, y, None)

    pooled, wide = pool(rows, d.inverse, batch.example, batch.field, n, F)
    _, cache = forward(params, pooled, dense_x, wide)
    _, d_pooled, d_wide = backward(params, cache, y)
    g = unpool_grads(d_pooled, d_wide, d.inverse, batch.example, batch.field, len(d.keys), dim)
    assert g.dtype == np.float64 and g.shape == rows.shape
    eps = 1e-6
    num = np.zeros_like(rows)
    for idx in np.ndindex(rows.shape):
        old = rows[idx]
        rows[idx] = old + eps
        up = loss_of(rows)
        rows[idx] = old - eps
        down = loss_of(rows)
        rows[idx] = old
        num[idx] = (up - down) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-9)


def test_pool_is_sum_per_field_and_wide_is_sum_of_weights():
    batch, d, rows, n, F, dim = _sparse_case()
    pooled, wide = pool(rows, d.inverse, batch.example, batch.field, n, F)
    for i in range(n):
        for f in range(F):
            sel = (batch.example == i) & (batch.field == f)
            np.testing.assert_allclose(pooled[i, f * dim:(f + 1) * dim], rows[d.inverse[sel], 1:].sum(0), atol=1e-12)
        np.testing.assert_allclose(wide[i], rows[d.inverse[batch.example == i], 0].sum(), atol=1e-12)
    assert not pooled[3].any() and wide[3] == 0  # no features


def test_train_step_float32_scaled_sparse_grads_and_no_mutation():
    layout = DenseLayout(3, 4, 2, (6, 5))
    params = init_dense(layout, 1)
    batch, d, rows, n, F, dim = _sparse_case()
    rows32 = rows.astype(np.float32)
    before = {k: v.copy() for k, v in params.items()}
    rows_before = rows32.copy()
    ws = {}
    r = train_step(params, batch, d, rows32, F, workspace=ws)
    r2 = train_step(params, batch, d, rows32, F, workspace=ws)  # workspace reuse gives the same
    assert r.probs.dtype == np.float32 and r.sparse_grads.dtype == np.float32
    assert r.sparse_grads.shape == (len(d.keys), 1 + dim) and r.sparse_grads.flags.c_contiguous
    np.testing.assert_array_equal(r.probs, r2.probs)
    np.testing.assert_array_equal(r.sparse_grads, r2.sparse_grads)
    assert all(np.array_equal(before[k], params[k]) for k in params) and np.array_equal(rows32, rows_before)
    # sparse grads = n * dL/drow ; the wide gradient of a feature = sum over its examples of (p - y)
    p64, y = r.probs.astype(np.float64), batch.labels.astype(np.float64)
    for u in range(len(d.keys)):
        ex = batch.example[d.inverse == u]
        assert r.sparse_grads[u, 0] == pytest.approx((p64[ex] - y[ex]).sum(), rel=1e-4, abs=1e-6)
    assert r.loss == pytest.approx(log_loss(np.log(p64 / (1 - p64)), y), rel=1e-4)


def test_init_flatten_unflatten():
    a, b, c = init_dense(LAYOUT, 7), init_dense(LAYOUT, 7), init_dense(LAYOUT, 8)
    assert all(a[k].dtype == np.float32 and np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["h0.w"], c["h0.w"])
    assert list(a) == list(LAYOUT.shapes())
    vec = flatten(a, LAYOUT)
    assert vec.shape == (LAYOUT.num_params,) and vec.dtype == np.float32
    views = unflatten(vec, LAYOUT)
    views["out.b"][0] = 5.0
    assert vec[-1] == 5.0  # views, not copies
    with pytest.raises(ValueError, match="expected shape"):
        unflatten(vec[:-1], LAYOUT)


def test_forward_rejects_wrong_widths():
    params = init_dense(LAYOUT, 0)
    with pytest.raises(ValueError, match="input width"):
        forward(params, np.zeros((2, 5), np.float32), np.zeros((2, 2), np.float32), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="disagree"):
        forward(params, np.zeros((2, 12), np.float32), np.zeros((3, 2), np.float32), np.zeros(2, np.float32))


def test_sigmoid_and_log_loss_stable():
    z = np.array([-1000.0, 0.0, 1000.0])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        s = sigmoid(z)
        ll = log_loss(z, np.array([1.0, 0.0, 0.0]))
    assert s.tolist() == [0.0, 0.5, 1.0]
    assert ll == pytest.approx((1000 + np.log(2) + 1000) / 3)


@pytest.mark.parametrize("rule", ["sgd", "adagrad", "adam"])
def test_optimizers_descend_a_quadratic_and_keep_state_in_arrays(rule):
    opt = DenseOptimizer(rule, learning_rate={"sgd": 0.1, "adagrad": 0.5, "adam": 0.1}[rule])
    target = np.array([1.0, -2.0, 0.5], np.float32)
    params = {"w": np.zeros(3, np.float32)}
    state = opt.init_state(params)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    for _ in range(300):
        grads = {"w": params["w"] - target}
        g_copy = grads["w"].copy()
        opt.apply(params, grads, state)
        assert np.array_equal(grads["w"], g_copy)
    np.testing.assert_allclose(params["w"], target, atol=0.05)
    assert params["w"].dtype == np.float32


def test_adam_first_step_is_lr_times_sign_and_bad_rule():
    opt = DenseOptimizer("adam", learning_rate=0.01)
    params = {"w": np.zeros(2, np.float32)}
    state = opt.init_state(params)
    opt.apply(params, {"w": np.array([3.0, -0.001], np.float32)}, state)
    np.testing.assert_allclose(params["w"], [-0.01, 0.01], rtol=1e-3)
    with pytest.raises(ValueError, match="rmsprop"):
        DenseOptimizer("rmsprop", 0.1)
    with pytest.raises(ValueError, match="shape"):
        opt.apply(params, {"w": np.zeros(3, np.float32)}, state)


def test_a_batch_takes_milliseconds():
    import time
    layout = DenseLayout(4, 8, 3, (64, 32))
    params = init_dense(layout, 0)
    rng = np.random.default_rng(0)
    n, m = 512, 512 * 6
    batch = Batch(labels=rng.integers(0, 2, n).astype(np.float32), shows=np.ones(n, np.float32),
                  dense=rng.normal(size=(n, 3)).astype(np.float32),
                  keys=rng.integers(0, 5000, m).astype(np.uint64), field=rng.integers(0, 4, m).astype(np.int32),
                  slots=np.zeros(m, np.int32), example=np.sort(rng.integers(0, n, m)).astype(np.int32))
    batch.slots = batch.field.copy()
    d = dedup(batch)
    rows = rng.normal(size=(len(d.keys), 9)).astype(np.float32)
    ws = {}
    train_step(params, batch, d, rows, 4, workspace=ws)
    t = time.perf_counter()
    for _ in range(10):
        train_step(params, batch, dedup(batch), rows, 4, workspace=ws)
    # ~1.5 ms with OPENBLAS_NUM_THREADS=1; generous for a loaded, shared 2-core machine whose BLAS
    # threads may fight: it catches a per-example Python loop, not a slow BLAS.
    assert (time.perf_counter() - t) / 10 < 0.25


def test_linear_model_without_hidden_layers_gradcheck():
    layout = DenseLayout(num_fields=1, dim=2, dense_dim=1, hidden=())
    params = {k: v.astype(np.float64) + 0.2 for k, v in init_dense(layout, 0).items()}
    assert list(params) == ["out.w", "out.b"]
    rng = np.random.default_rng(1)
    pooled, dense_x, wide = rng.normal(size=(4, 2)), rng.normal(size=(4, 1)), rng.normal(size=4)
    y = np.array([0, 1, 1, 0.0])
    _, cache = forward(params, pooled, dense_x, wide)
    grads, d_pooled, _ = backward(params, cache, y)
    p = cache["probs"]
    x = np.concatenate([pooled, dense_x], axis=1)
    np.testing.assert_allclose(grads["out.w"][:, 0], x.T @ (p - y) / 4, rtol=1e-12)
    np.testing.assert_allclose(d_pooled, np.outer(p - y, params["out.w"][:2, 0]) / 4, rtol=1e-12)


def test_layout_from_config_shape():
    from types import SimpleNamespace as NS
    cfg = NS(columns=NS(slots=("a", "b"), dense=("x",)), table=NS(dim=8), network=NS(hidden=(16,)))
    layout = DenseLayout.from_config(cfg)
    assert (layout.num_fields, layout.dim, layout.dense_dim, layout.input_dim) == (2, 8, 1, 17)
    assert DenseLayout.from_config(cfg, dense_dim=4).input_dim == 20
    with pytest.raises(ValueError, match="hidden"):
        DenseLayout(1, 2, 0, (0,))


def test_empty_batch_and_batch_without_features():
    layout = DenseLayout(2, 3, 1, (4,))
    params = init_dense(layout, 0)
    b = Batch(labels=np.array([1, 0], np.float32), shows=np.ones(2, np.float32), dense=np.ones((2, 1), np.float32),
              keys=np.zeros(0, np.uint64), slots=np.zeros(0, np.int32), field=np.zeros(0, np.int32),
              example=np.zeros(0, np.int32))
    d = dedup(b)
    r = train_step(params, b, d, np.zeros((0, 4), np.float32), 2)
    assert r.sparse_grads.shape == (0, 4) and r.probs.shape == (2,) and np.isfinite(r.loss)
