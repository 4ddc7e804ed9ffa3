"""The zoo through the whole training step: gradients of pooling, sequences and the pushed
sparse rows against finite differences (``network_checks.check_network_gradients``)."""
import importlib

import pytest
from tests.trainer.network_checks import check_network_gradients

from trainer.network.api import InputSpec

SPEC = InputSpec(slots=("user", "item", "category"), dim=3, dense_dim=2, sequences={"history": 4})
CASES = [
    ("wide_deep", {"hidden": [4]}),
    ("deepfm", {"hidden": [4]}),
    ("dcn_v2", {"cross_layers": 2, "hidden": [4]}),
    ("dcn_v2", {"cross_layers": 1, "hidden": [4], "structure": "parallel"}),
    ("din", {"target": "item", "sequence": "history", "hidden": [4], "attention_hidden": [4]}),
]


@pytest.mark.parametrize("name, options", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_whole_step_gradients_match_finite_differences(name, options):
    factory = importlib.import_module(f"trainer.network.zoo.{name}").network
    check_network_gradients(lambda spec: factory(spec, **options), SPEC)
