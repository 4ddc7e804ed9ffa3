"""Show-scaled updates (``table.optimizer.show_scale``, PaddlePaddle's enable_show_scale_gradient).

A push carries a feature's gradient summed over its occurrences in the batch and their summed
shows; with show_scale every rule applies the sum divided by the shows (at least 1).
"""

import numpy as np
import pytest

from pstable import OptimizerConfig, SparseTable, TableConfig, TableConfigError
from tests.pstable.pstable_cases import RULES, make_config

KEY = np.array([42], np.uint64)
SLOT = np.zeros(1, np.int32)


def issue_table(show_scale):
    """The documented defaults (adagrad, lr 0.05, initial_g2sum 3, bounds 10), dim 4."""
    return SparseTable(TableConfig(dim=4, optimizer=OptimizerConfig(show_scale=show_scale)))


def push_one(t, show, grad, hour=1):
    grads = np.full((1, t.config.dim + 1), grad, np.float32)
    t.push(KEY, SLOT, np.array([show], np.float32), np.zeros(1, np.float32), grads, hour)


def weights(t):
    return t.pull(KEY, SLOT)[0]


@pytest.mark.parametrize("show_scale", [False, True])
def test_issue_probe_a_frequent_feature_steps_like_one_occurrence(show_scale):
    """Issue 14's probe: a fresh adagrad weight pushed a gradient sum of 100 over 100 shows."""
    start = initial_weights(show_scale)
    t = issue_table(show_scale)
    push_one(t, show=100.0, grad=100.0)
    moved = start - weights(t)
    if not show_scale:
        # lr x 100: the 1-wide weight and every embedding element jump by 5.0
        np.testing.assert_allclose(moved, 5.0, rtol=1e-6)
    else:
        # exactly one occurrence's step (gradient 1, show 1), 1-wide weight and embedding alike
        one = issue_table(True)
        push_one(one, show=1.0, grad=1.0)
        assert weights(t).tobytes() == weights(one).tobytes()
        assert t.export()["opt_state"].tobytes() == one.export()["opt_state"].tobytes()
        np.testing.assert_allclose(moved, 0.05, rtol=1e-6)


def initial_weights(show_scale):
    """The feature's weights as created (a push of gradient 0 does not move them)."""
    t = issue_table(show_scale)
    push_one(t, show=1.0, grad=0.0)
    return weights(t)


@pytest.mark.parametrize("rule", RULES)
def test_occurrences_in_one_push_are_one_step_of_their_mean(rule):
    """100 occurrences of gradient g in a batch (merged by the push) move a row as one
    occurrence of g does; unscaled, they move it as one occurrence of 100 g."""
    grads = np.random.default_rng(5).standard_normal((1, 5)).astype(np.float32) * 0.1
    for show_scale in (True, False):
        many = SparseTable(make_config(rule, show_scale=show_scale))
        many.push(np.repeat(KEY, 100), np.zeros(100, np.int32), np.ones(100, np.float32),
                  np.zeros(100, np.float32), np.repeat(grads, 100, axis=0), hour=1)
        one = SparseTable(make_config(rule, show_scale=show_scale))
        one.push(KEY, SLOT, np.ones(1, np.float32), np.zeros(1, np.float32),
                 grads * (1 if show_scale else 100), hour=1)
        np.testing.assert_allclose(many.pull(KEY, SLOT), one.pull(KEY, SLOT), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(many.export()["opt_state"], one.export()["opt_state"],
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("rule", RULES)
def test_shows_of_at_most_one_are_not_scaled(rule):
    """Shows of 0 (a gradient without an impression) or below 1 divide by 1, never magnify:
    with such pushes only, show_scale on and off give the same table bit for bit."""
    rng = np.random.default_rng(9)
    keys = rng.integers(0, 50, 400).astype(np.uint64)
    tables = [SparseTable(make_config(rule, show_scale=s)) for s in (True, False)]
    for hour in range(6):
        # one occurrence per feature per push, show in {0, 0.25, 0.5, 1}
        q = np.unique(keys[rng.integers(0, 400, 40)])
        shows = rng.choice(np.array([0, 0.25, 0.5, 1], np.float32), len(q))
        grads = rng.standard_normal((len(q), 5)).astype(np.float32)
        for t in tables:
            t.push(q, None, shows, 0 * shows, grads, hour)
    a, b = (t.export() for t in tables)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name


@pytest.mark.parametrize("rule", RULES)
def test_unscaled_steps_do_not_depend_on_shows(rule):
    """show_scale = false: the step is the gradient sum's, whatever the shows (the table as it
    was before the switch)."""
    grads = np.full((1, 5), 0.3, np.float32)
    got = []
    for show in (0.0, 1.0, 7.0, 100.0):
        t = SparseTable(make_config(rule, show_scale=False))
        t.push(KEY, SLOT, np.array([show], np.float32), np.zeros(1, np.float32), grads, 1)
        got.append(t.export())
    for other in got[1:]:
        assert other["weights"].tobytes() == got[0]["weights"].tobytes()
        assert other["opt_state"].tobytes() == got[0]["opt_state"].tobytes()


def test_show_scale_must_be_a_bool():
    assert OptimizerConfig().show_scale is True
    with pytest.raises(TableConfigError, match="table.optimizer.show_scale: must be true or false"):
        OptimizerConfig(show_scale=1)
    assert TableConfig(optimizer={"show_scale": False}).to_dict()["optimizer"]["show_scale"] is False
