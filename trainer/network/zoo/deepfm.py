"""DeepFM (Guo et al., 2017): a factorization machine and an MLP over the same embeddings.

- **first order**: the table's 1-wide weights (``inputs.wide``) plus a linear layer on the dense
  features;
- **second order (FM)**: every pair of slots interacts through the dot product of their
  embeddings, ``sum_{i<j} <v_i, v_j> = 0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2)`` (sequence
  slots take part sum-pooled, as one more slot);
- **deep**: an MLP over the embeddings side by side and the dense features.

``logit = wide + linear(dense) + fm(embeddings) + mlp([embeddings, dense])``: Wide & Deep
(``wide_deep.py``) plus the FM term. Options: ``hidden`` (the MLP's widths, default ``[64, 32]``).

>>> import jax, jax.numpy as jnp
>>> from trainer.network.api import InputSpec, Inputs
>>> v = jnp.array([[[1.0, 2.0], [3.0, -1.0]]])  # one row, two slots, dim 2
>>> float(fm_term(v)[0])  # <v_0, v_1> = 1*3 + 2*(-1)
1.0
"""
from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from trainer.network.api import InputSpec, Inputs
from trainer.network.layers import field_embeddings, widths
from trainer.network.zoo.wide_deep import WideDeep


def fm_term(fields):
    """``[B]``: the FM second-order term of ``fields`` ``[B, K, dim]`` (sum over slot pairs of
    their embeddings' dot product)."""
    total = jnp.sum(fields, axis=1)
    return 0.5 * jnp.sum(total * total - jnp.sum(fields * fields, axis=1), axis=1)


@dataclass(frozen=True)
class DeepFM(WideDeep):
    """Wide & Deep (the same parameters) plus the FM term, which has no parameters of its own:
    it reads the embeddings, so the table learns them to make the pairs' dot products right."""

    def apply(self, params, inputs: Inputs):
        fields = field_embeddings(inputs, tuple(self.spec.sequences))
        return super().apply(params, inputs) + fm_term(fields)


def network(spec: InputSpec, hidden=(64, 32)) -> DeepFM:
    """The zoo factory: ``[network] model = "deepfm"``, ``[network.options] hidden = [...]``."""
    return DeepFM(spec, widths("hidden", hidden))
