"""DCN-v2 (Wang et al., 2021): a cross network of explicit feature crosses, with an MLP.

The input ``x0`` is the slot embeddings side by side (sequence slots sum-pooled, as one more
slot) and the dense features. Each cross layer multiplies ``x0`` by a full-rank linear map of the
previous layer, so layer ``l`` holds crosses of degree ``l + 1``:

    x_{l+1} = x0 * (W_l @ x_l + b_l) + x_l

- ``structure = "stacked"`` (default): the MLP runs on the last cross layer's output;
- ``structure = "parallel"``: the MLP runs on ``x0`` beside the cross network, and one linear layer
  reads both.

``logit = wide + head``. Options: ``cross_layers`` (default 2, >= 1), ``hidden`` (the MLP's widths,
default ``[64, 32]``), ``structure``.

>>> import jax, jax.numpy as jnp
>>> from trainer.network.api import InputSpec, Inputs
>>> net = network(InputSpec(slots=("user", "item"), dim=4, dense_dim=3), cross_layers=1, hidden=[8])
>>> sorted(net.init(jax.random.PRNGKey(0)))
['cross.0.b', 'cross.0.w', 'deep.0.b', 'deep.0.w', 'deep.1.b', 'deep.1.w']
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from trainer.network.api import InputSpec, Inputs
from trainer.network.layers import (count, dense_init, field_embeddings, flat_input, mlp_apply,
                                    mlp_init, widths)

STRUCTURES = ("stacked", "parallel")


@dataclass(frozen=True)
class DCNv2:
    spec: InputSpec
    cross_layers: int
    hidden: tuple[int, ...]
    structure: str

    def init(self, key) -> dict:
        spec = self.spec
        width = (spec.num_fields + len(spec.sequences)) * spec.dim + spec.dense_dim
        k_cross, k_deep, k_head = jax.random.split(key, 3)
        params = {}
        for layer in range(self.cross_layers):
            params.update(dense_init(jax.random.fold_in(k_cross, layer), f"cross.{layer}",
                                     width, width, relu=False))
        if self.structure == "stacked":
            params.update(mlp_init(k_deep, "deep", [width, *self.hidden, 1]))
        else:
            params.update(mlp_init(k_deep, "deep", [width, *self.hidden]))
            params.update(dense_init(k_head, "head", width + ([width, *self.hidden][-1]), 1,
                                     relu=False))
        return params

    def apply(self, params, inputs: Inputs):
        x0 = flat_input(field_embeddings(inputs, tuple(self.spec.sequences)), inputs.dense)
        x = x0
        for layer in range(self.cross_layers):
            x = x0 * (x @ params[f"cross.{layer}.w"] + params[f"cross.{layer}.b"]) + x
        if self.structure == "stacked":
            head = mlp_apply(params, "deep", x)
        else:
            deep = mlp_apply(params, "deep", x0)
            if self.hidden:  # the MLP's last layer is linear: give it its ReLU before the head
                deep = jax.nn.relu(deep)
            head = jnp.concatenate([x, deep], axis=1) @ params["head.w"] + params["head.b"]
        return inputs.wide + head[:, 0]


def network(spec: InputSpec, cross_layers=2, hidden=(64, 32), structure="stacked") -> DCNv2:
    """The zoo factory: ``[network] model = "dcn_v2"``; options ``cross_layers``, ``hidden``,
    ``structure``."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure: must be one of {', '.join(STRUCTURES)}, got {structure!r}")
    return DCNv2(spec, count("cross_layers", cross_layers, minimum=1), widths("hidden", hidden),
                 structure)
