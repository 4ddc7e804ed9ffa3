"""The zoo's networks (``trainer/network/zoo``): parameters, shapes, option checks and gradients.

Gradients are checked against finite differences in float64 (``jax.test_util.check_grads``), of
``apply`` with respect to the parameters and to every input the framework differentiates
(pooled embeddings, wide term, dense features, sequence embeddings).
"""
from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from trainer.network.api import InputSpec, Inputs, Network

SPEC = InputSpec(slots=("user", "item", "category"), dim=4, dense_dim=3, sequences={"history": 5})
PLAIN = InputSpec(slots=("user", "item"), dim=3, dense_dim=2)
B = 6

# (zoo name, options, spec): every structure of every model, with and without a sequence slot
CASES = [
    ("wide_deep", {"hidden": [8, 4]}, SPEC),
    ("wide_deep", {"hidden": []}, PLAIN),
    ("deepfm", {"hidden": [8]}, SPEC),
    ("deepfm", {}, PLAIN),
    ("dcn_v2", {"cross_layers": 2, "hidden": [8]}, SPEC),
    ("dcn_v2", {"cross_layers": 1, "hidden": [6, 4], "structure": "parallel"}, SPEC),
    ("dcn_v2", {"structure": "parallel", "hidden": []}, PLAIN),
    ("din", {"target": "item", "sequence": "history", "hidden": [8], "attention_hidden": [6]}, SPEC),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


def make(name: str, spec: InputSpec = SPEC, **options) -> Network:
    return importlib.import_module(f"trainer.network.zoo.{name}").network(spec, **options)


def batch(spec: InputSpec, seed: int = 0, dtype=np.float32) -> Inputs:
    """Random inputs; each sequence has rows of every length 0..L (zeros where padded)."""
    rng = np.random.default_rng(seed)
    sequences, masks = {}, {}
    for name, length in spec.sequences.items():
        mask = (np.arange(length)[None, :] < (np.arange(B) % (length + 1))[:, None]).astype(dtype)
        sequences[name] = jnp.asarray(rng.normal(0, 0.5, (B, length, spec.dim)) * mask[:, :, None], dtype)
        masks[name] = jnp.asarray(mask)
    return Inputs(pooled=jnp.asarray(rng.normal(0, 0.5, (B, spec.num_fields, spec.dim)), dtype),
                  wide=jnp.asarray(rng.normal(0, 0.3, B), dtype),
                  dense=jnp.asarray(rng.normal(0, 1.0, (B, spec.dense_dim)), dtype),
                  sequences=sequences, masks=masks)


@pytest.mark.parametrize("name, options, spec", CASES, ids=IDS)
def test_init_is_deterministic_float32_and_apply_gives_one_logit_per_row(name, options, spec):
    net = make(name, spec, **options)
    assert isinstance(net, Network)
    a, again, other = (net.init(jax.random.PRNGKey(k)) for k in (1, 1, 2))
    assert sorted(a) == sorted(again) == sorted(other)
    assert all(a[k].dtype == jnp.float32 for k in a)
    assert all(np.array_equal(a[k], again[k]) for k in a)
    assert any(not np.array_equal(a[k], other[k]) for k in a)
    logits = jax.jit(net.apply)(a, batch(spec))
    assert logits.shape == (B,) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("name, options, spec", CASES, ids=IDS)
def test_the_wide_term_is_added_to_the_logits(name, options, spec):
    net = make(name, spec, **options)
    params, x = net.init(jax.random.PRNGKey(0)), batch(spec)
    shifted = net.apply(params, x._replace(wide=x.wide + 1.5))
    np.testing.assert_allclose(shifted - net.apply(params, x), 1.5, rtol=1e-5)


@pytest.mark.parametrize("name, options, spec", CASES, ids=IDS)
def test_gradients_match_finite_differences(name, options, spec):
    net = make(name, spec, **options)
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        # non-zero biases and linear weights so every path carries gradient
        params = {k: jnp.asarray(np.asarray(v, np.float64) + rng.normal(0, 0.2, v.shape))
                  for k, v in net.init(jax.random.PRNGKey(3)).items()}
        x = batch(spec, seed=1, dtype=np.float64)

        @jax.jit  # one compile instead of op-by-op dispatch in the many evaluations below
        def logits(params, pooled, wide, dense, sequences):
            return net.apply(params, Inputs(pooled, wide, dense, sequences, x.masks))

        # reverse mode only: training differentiates nothing in forward mode
        check_grads(logits, (params, x.pooled, x.wide, x.dense, dict(x.sequences)), order=1,
                    modes=("rev",), eps=1e-6)
        grads = jax.grad(lambda *a: jnp.sum(logits(*a)), argnums=(0, 1, 4))(
            params, x.pooled, x.wide, x.dense, dict(x.sequences))
        assert all(np.any(g != 0) for g in grads[0].values()), "a parameter gets no gradient"
        assert np.all(np.any(grads[1] != 0, axis=(0, 2))), "a pooled slot gets no gradient"
        for name_, g in grads[2].items():  # padded positions get none, real ids do
            real = np.asarray(x.masks[name_], bool)
            assert np.all(np.asarray(g)[~real] == 0) and np.any(np.asarray(g)[real] != 0)


def test_fm_term_is_the_sum_over_slot_pairs_of_dot_products():
    from trainer.network.zoo.deepfm import fm_term
    v = np.random.default_rng(0).normal(size=(5, 4, 3))
    pairs = sum(np.sum(v[:, i] * v[:, j], axis=1) for i in range(4) for j in range(i + 1, 4))
    np.testing.assert_allclose(fm_term(jnp.asarray(v, jnp.float32)), pairs, rtol=1e-5, atol=1e-5)


def test_cross_layer_is_x0_times_linear_map_plus_residual():
    net = make("dcn_v2", PLAIN, cross_layers=1, hidden=[], structure="stacked")
    params, x = net.init(jax.random.PRNGKey(0)), batch(PLAIN)
    x0 = np.concatenate([np.asarray(x.pooled).reshape(B, -1), np.asarray(x.dense)], axis=1)
    crossed = x0 * (x0 @ params["cross.0.w"] + params["cross.0.b"]) + x0
    want = np.asarray(x.wide) + (crossed @ params["deep.0.w"] + params["deep.0.b"])[:, 0]
    np.testing.assert_allclose(net.apply(params, x), want, rtol=1e-4, atol=1e-5)


def test_din_ignores_what_the_mask_hides_and_attends_to_the_target():
    net = make("din", SPEC, target="item", sequence="history", hidden=[8], attention_hidden=[6])
    params, x = net.init(jax.random.PRNGKey(0)), batch(SPEC)
    mask = np.asarray(x.masks["history"])
    garbage = np.asarray(x.sequences["history"]) + 7.0 * (1 - mask)[:, :, None]  # padding not zero
    noisy = x._replace(sequences={"history": jnp.asarray(garbage)})
    np.testing.assert_array_equal(net.apply(params, x), net.apply(params, noisy))
    assert np.any(mask == 0) and np.any(mask.sum(1) == 0)  # the batch has padding and empty rows
    other_target = x._replace(pooled=x.pooled.at[:, 1].multiply(-1.0))
    keep_history = x._replace(pooled=other_target.pooled.at[:, 1].set(x.pooled[:, 1]))
    assert not np.allclose(net.apply(params, other_target), net.apply(params, x))
    np.testing.assert_array_equal(net.apply(params, keep_history), net.apply(params, x))


@pytest.mark.parametrize("name, options, match", [
    ("din", {"target": "history", "sequence": "history"}, r"^target: .*pooled slot.*'history'"),
    ("din", {"target": "nope", "sequence": "history"}, r"^target: .*'nope'"),
    ("din", {"sequence": "history"}, r"^target: "),
    ("din", {"target": "item", "sequence": "item"}, r"^sequence: .*sequence slot.*'item'"),
    ("din", {"target": "item", "sequence": "history", "attention_hidden": [4, 0]}, r"^attention_hidden: "),
    ("wide_deep", {"hidden": [0]}, r"^hidden: .*>= 1, got 0"),
    ("deepfm", {"hidden": "64"}, r"^hidden: .*list"),
    ("deepfm", {"hidden": [8.5]}, r"^hidden: "),
    ("dcn_v2", {"cross_layers": 0}, r"^cross_layers: .*>= 1"),
    ("dcn_v2", {"cross_layers": True}, r"^cross_layers: "),
    ("dcn_v2", {"structure": "both"}, r"^structure: .*stacked, parallel.*'both'"),
])
def test_bad_options_are_refused_by_name(name, options, match):
    with pytest.raises(ValueError, match=match):
        make(name, SPEC, **options)


def test_din_without_sequence_slots_says_none_are_declared():
    with pytest.raises(ValueError, match=r"^sequence: .*none declared in \[columns\] sequences"):
        make("din", PLAIN, target="item", sequence="history")
