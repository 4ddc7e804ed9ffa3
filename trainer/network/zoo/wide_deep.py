"""Wide & Deep (Cheng et al., 2016): a linear model and an MLP, trained jointly.

- **wide**: the table's 1-wide weights (``inputs.wide``, one per id: a logistic regression on the
  ids) plus a linear layer on the dense features;
- **deep**: an MLP over the slot embeddings side by side (sequence slots sum-pooled as one more
  slot) and the dense features.

``logit = wide + linear(dense) + mlp([pooled, dense])``. Options: ``hidden`` (the MLP's widths,
default ``[64, 32]``; ``[]`` leaves the deep part one linear layer).

>>> import jax, jax.numpy as jnp
>>> from trainer.network.api import InputSpec, Inputs
>>> net = network(InputSpec(slots=("user", "item"), dim=4, dense_dim=3), hidden=[8])
>>> params = net.init(jax.random.PRNGKey(0))
>>> sorted(params)
['deep.0.b', 'deep.0.w', 'deep.1.b', 'deep.1.w', 'linear.w']
>>> x = Inputs(jnp.ones((2, 2, 4)), jnp.zeros(2), jnp.ones((2, 3)), {}, {})
>>> net.apply(params, x).shape
(2,)
"""
from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from trainer.network.api import InputSpec, Inputs
from trainer.network.layers import field_embeddings, flat_input, mlp_apply, mlp_init, widths


@dataclass(frozen=True)
class WideDeep:
    spec: InputSpec
    hidden: tuple[int, ...]

    def init(self, key) -> dict:
        spec = self.spec
        width = (spec.num_fields + len(spec.sequences)) * spec.dim + spec.dense_dim
        params = mlp_init(key, "deep", [width, *self.hidden, 1])
        params["linear.w"] = jnp.zeros((spec.dense_dim,), jnp.float32)  # wide starts at 0, as the table's
        return params

    def apply(self, params, inputs: Inputs):
        fields = field_embeddings(inputs, tuple(self.spec.sequences))
        deep = mlp_apply(params, "deep", flat_input(fields, inputs.dense))[:, 0]
        return inputs.wide + inputs.dense @ params["linear.w"] + deep


def network(spec: InputSpec, hidden=(64, 32)) -> WideDeep:
    """The zoo factory: ``[network] model = "wide_deep"``, ``[network.options] hidden = [...]``."""
    return WideDeep(spec, widths("hidden", hidden))
