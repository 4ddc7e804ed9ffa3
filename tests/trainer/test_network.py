"""The JAX step, the flat parameter vector and the dense optimizer (what replaced trainer/model.py)."""
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.trainer.network_checks import check_network_gradients, hand_made_batch
from trainer.network import load
from trainer.network.api import InputSpec
from trainer.network.layout import ParamLayout
from trainer.network.optimizer import DenseOptimizer
from trainer.network.step import NonFiniteOutputError, Step, make_inputs
from trainer.network.zoo import dnn
from trainer.reader import dedup

REPO = Path(__file__).resolve().parents[2]
SPEC = InputSpec(slots=("a", "b", "c"), dim=3, dense_dim=2)
SEQ_SPEC = InputSpec(slots=("a", "b"), dim=3, dense_dim=2, sequences={"hist": 4, "clicks": 2})


def _example_factory():
    return load.factory_of(load.resolve("models/ipnn.py:build", {}, REPO / "examples"))


@pytest.mark.parametrize("hidden", [[5, 4], []])
def test_dnn_gradients_match_finite_differences(hidden):
    check_network_gradients(lambda spec: dnn.network(spec, hidden=hidden), SPEC)


def test_dnn_gradients_with_sequence_slots_in_the_batch():
    """dnn ignores the sequences, but their ids still carry the wide term's gradient."""
    check_network_gradients(lambda spec: dnn.network(spec, hidden=[4]), SEQ_SPEC)


@pytest.mark.parametrize("spec", [SPEC, SEQ_SPEC], ids=["pooled", "sequences"])
def test_example_user_network_gradients_match_finite_differences(spec):
    build = _example_factory()
    check_network_gradients(lambda s: build(s, hidden=[4], product_scale=0.7), spec)


def _built(spec=SPEC, hidden=(6,)):
    source = load.resolve("dnn", {"hidden": list(hidden)}, REPO)
    return load.build(source, spec, 8)


def _flat(built, seed=1):
    params = built.network.init(jax.random.PRNGKey(seed))
    return built.layout.flatten({k: np.asarray(v) for k, v in params.items()})


def test_step_sparse_gradients_are_n_times_the_mean_loss_gradient_and_nothing_is_mutated():
    built = _built()
    step = Step(built, 8)
    batch = hand_made_batch(SPEC, n=5, shows=False)
    features = dedup(batch)
    rows = np.random.default_rng(0).normal(0, 0.3, (len(features.keys), 4)).astype(np.float32)
    flat = _flat(built)
    before = (flat.copy(), rows.copy(), batch.keys.copy())
    r = step.train(flat, batch, features, rows)
    again = step.train(flat, batch, features, rows)
    assert np.array_equal(r.probs, again.probs) and np.array_equal(r.sparse_grads, again.sparse_grads)
    assert np.array_equal(flat, before[0]) and np.array_equal(rows, before[1])
    assert r.probs.dtype == np.float32 and r.sparse_grads.dtype == np.float32
    assert r.sparse_grads.flags.c_contiguous and r.dense_grads.shape == (built.layout.num_params,)
    # the wide weight's gradient of a feature = sum over its occurrences of (p - y)
    p, y = r.probs.astype(np.float64), batch.labels.astype(np.float64)
    for u in range(len(features.keys)):
        ex = batch.example[features.inverse == u]
        assert r.sparse_grads[u, 0] == pytest.approx((p[ex] - y[ex]).sum(), rel=1e-4, abs=1e-6)
    want = np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert r.loss == pytest.approx(want, rel=1e-4)
    np.testing.assert_array_equal(step.predict(flat, batch, features, rows), r.probs)


def test_padding_rows_change_nothing():
    """The same rows in a step of 8 and of 32 give the same predictions and gradients."""
    built = _built()
    batch = hand_made_batch(SPEC, n=5)
    features = dedup(batch)
    rows = np.random.default_rng(2).normal(0, 0.3, (len(features.keys), 4)).astype(np.float32)
    small, big = (Step(built, b).train(_flat(built), batch, features, rows) for b in (8, 32))
    np.testing.assert_allclose(small.probs, big.probs, rtol=1e-6)
    np.testing.assert_allclose(small.sparse_grads, big.sparse_grads, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(small.dense_grads, big.dense_grads, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="larger than the step's 4"):
        Step(built, 4).train(_flat(built), batch, features, rows)


def test_inputs_pool_per_slot_sum_wide_and_sequences_in_list_order():
    batch = hand_made_batch(SEQ_SPEC, n=4, seed=3)
    features = dedup(batch)
    rows = np.random.default_rng(1).normal(size=(len(features.keys), 4)).astype(np.float32)
    got = make_inputs(SEQ_SPEC, batch, features, rows, 6).inputs
    occ_rows = rows[features.inverse]
    for i in range(4):
        for f in range(SEQ_SPEC.num_fields):
            sel = (batch.example == i) & (batch.field == f)
            np.testing.assert_allclose(got.pooled[i, f], occ_rows[sel, 1:].sum(0), atol=1e-6)
        np.testing.assert_allclose(got.wide[i], occ_rows[batch.example == i, 0].sum(), atol=1e-6)
        for name, index in batch.sequences.items():
            real = index[i] >= 0
            np.testing.assert_array_equal(got.masks[name][i], real.astype(np.float32))
            np.testing.assert_allclose(got.sequences[name][i][real], occ_rows[index[i][real], 1:])
            assert not got.sequences[name][i][~real].any()
    assert not got.pooled[3].any() and got.wide[3] == 0 and not got.pooled[4:].any()


def test_a_batch_without_sequences_feeds_empty_masks():
    batch = hand_made_batch(SPEC, n=3)
    batch.sequences = {}  # what the reader gives when no sequence slot is configured
    features = dedup(batch)
    rows = np.zeros((len(features.keys), 4), np.float32)
    got = make_inputs(SEQ_SPEC, batch, features, rows, 4).inputs
    assert set(got.masks) == {"hist", "clicks"} and not any(m.any() for m in got.masks.values())


def test_non_finite_output_names_the_batch_and_the_output():
    class Nan:
        def init(self, key):
            return {"w": jax.numpy.zeros((1,), jax.numpy.float32)}

        def apply(self, params, inputs):
            return jax.numpy.where(inputs.dense[:, 0] > 0.5, jax.numpy.nan, 0.0) + params["w"][0]

    step = Step(load.Built(Nan(), SPEC, ParamLayout({"w": (1,)}), None), 8)
    batch = hand_made_batch(SPEC, n=4)
    batch.dense[:] = [[0, 0], [0, 0], [1, 0], [1, 0]]
    batch.sources = (("/data/part-0.parquet", 1200, 4),)
    features = dedup(batch)
    with pytest.raises(NonFiniteOutputError,
                       match=r"output 2 of the batch starting at /data/part-0.parquet row 1200 "
                             r"\(4 rows\) is nan \(2 non-finite"):
        step.train(np.zeros(1, np.float32), batch, features, np.zeros((len(features.keys), 4)))


def test_layout_flat_order_views_and_first_difference():
    layout = ParamLayout({"z": (2,), "a.w": (2, 3)})
    assert layout.names == ("a.w", "z") and layout.num_params == 8
    vec = layout.flatten({"z": np.array([7, 8]), "a.w": np.arange(6).reshape(2, 3)})
    assert vec.tolist() == [0, 1, 2, 3, 4, 5, 7, 8] and vec.dtype == np.float32
    views = layout.unflatten(vec)
    views["z"][0] = 5
    assert vec[6] == 5
    assert ParamLayout.from_record(layout.record()) == layout
    assert layout.first_difference(ParamLayout({"a.w": (2, 3), "z": (3,)})) == \
        "parameter 'z' has shape (2,) here, (3,) there"
    assert "'b' is missing here" in layout.first_difference(ParamLayout({"a.w": (2, 3), "b": (1,), "z": (2,)}))
    with pytest.raises(ValueError, match="'a.w' is not in both"):
        layout.flatten({"z": np.zeros(2)})
    with pytest.raises(ValueError, match="expected shape"):
        layout.unflatten(vec[:-1])


def test_dnn_init_is_deterministic_in_the_key_and_named_as_today():
    built = _built(hidden=(6, 5))
    assert built.layout.names == ("h0.b", "h0.w", "h1.b", "h1.w", "out.b", "out.w")
    assert built.layout.shapes["h0.w"] == (3 * 3 + 2, 6)
    assert np.array_equal(_flat(built, 3), _flat(built, 3))
    assert not np.array_equal(_flat(built, 3), _flat(built, 4))


@pytest.mark.parametrize("rule", ["sgd", "adagrad", "adam"])
def test_optimizers_descend_a_quadratic_and_keep_state_in_arrays(rule):
    opt = DenseOptimizer(rule, learning_rate={"sgd": 0.1, "adagrad": 0.5, "adam": 0.1}[rule])
    target = np.array([1.0, -2.0, 0.5], np.float32)
    params = {"w": np.zeros(3, np.float32)}
    state = opt.init_state(params)
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
