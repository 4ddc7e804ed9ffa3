"""Table configs of the pstable contract suite: every optimizer rule x admission x eviction policy,
with show-scaled updates on and off."""

import itertools

import numpy as np
import pytest

from pstable import AdmissionConfig, OptimizerConfig, TableConfig

RULES = ("sgd", "adagrad", "adam")
ADMISSIONS = {
    "none": dict(policy="none"),
    "count_filter": dict(policy="count_filter", count=3),
    "probability": dict(policy="probability", probability=0.4),
    "show_click": dict(policy="show_click", threshold=1.5),
}
EVICTIONS = {
    "unseen_days": dict(delete_after_unseen_days=1, delete_threshold=0.0),
    "score": dict(delete_after_unseen_days=0, delete_threshold=0.5),
}

EDGE_KEYS = np.array([0, 2**64 - 1, 2**63, 2**63 - 1, 1, 2**32 - 1, 2**32], dtype=np.uint64)


SHOW_SCALE = {"scaled": True, "unscaled": False}


def make_config(rule="adagrad", admission="none", eviction="unseen_days", dim=4, seed=2026,
                show_scale=True, **kw):
    opt = OptimizerConfig(rule=rule, learning_rate=0.05, initial_range=0.01, weight_bounds=0.5,
                          initial_g2sum=3.0, beta1=0.9, beta2=0.999, epsilon=1e-8,
                          show_scale=show_scale)
    return TableConfig(dim=dim, optimizer=opt, admission=AdmissionConfig(**ADMISSIONS[admission]),
                       nonclk_coeff=0.1, click_coeff=1.0, show_click_decay_rate=0.9, seed=seed,
                       **{**EVICTIONS[eviction], **kw})


CASES = [pytest.param((r, a, e, s), id=f"{r}-{a}-{e}-{s}")
         for r, a, e, s in itertools.product(RULES, ADMISSIONS, EVICTIONS, SHOW_SCALE)]
