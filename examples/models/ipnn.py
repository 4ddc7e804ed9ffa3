"""A user-written network (not in the zoo): an inner-product network (IPNN, Qu et al. 2016).

``examples/custom.toml`` trains it: ``[network] model = "models/ipnn.py:build"``. It shows what a
network file holds: a factory that takes the :class:`InputSpec` and the options, and an object
with ``init`` (the parameters) and ``apply`` (the logits). No gradient is written anywhere.

Per example: the ``F`` pooled slot embeddings, plus one mean-pooled embedding per sequence slot
(masked average, if the config declares sequences), are the fields. Their pairwise inner
products ``<e_a, e_b>`` (``a < b``) feed an MLP together with the flattened embeddings and the
dense features; the logit adds the wide term.

Options: ``hidden`` (MLP widths, default ``[32]``), ``product_scale`` (multiplies the inner
products before the MLP, default 1.0).
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from trainer.network.api import InputSpec, Inputs


def build(spec: InputSpec, hidden=(32,), product_scale: float = 1.0) -> "IPNN":
    if not all(isinstance(w, int) and w >= 1 for w in hidden):
        raise ValueError(f"hidden: widths must be integers >= 1, got {list(hidden)}")
    return IPNN(spec, tuple(hidden), float(product_scale))


@dataclass(frozen=True)
class IPNN:
    spec: InputSpec
    hidden: tuple[int, ...]
    product_scale: float

    @property
    def fields(self) -> int:
        return self.spec.num_fields + len(self.spec.sequences)

    def init(self, key):
        fields = self.fields
        fan_in = fields * self.spec.dim + fields * (fields - 1) // 2 + self.spec.dense_dim
        params = {}
        for i, width in enumerate((*self.hidden, 1)):
            key, sub = jax.random.split(key)
            scale = 0.1 if i == len(self.hidden) else 1.0  # a near-constant first prediction
            r = scale * jnp.sqrt(6.0 / fan_in)
            params[f"layer{i}.w"] = jax.random.uniform(sub, (fan_in, width), jnp.float32, -r, r)
            params[f"layer{i}.b"] = jnp.zeros((width,), jnp.float32)
            fan_in = width
        return params

    def apply(self, params, inputs: Inputs):
        batch = inputs.wide.shape[0]
        fields = [inputs.pooled]
        for name in self.spec.sequences:  # masked mean of each sequence's embeddings
            mask = inputs.masks[name][..., None]
            mean = (inputs.sequences[name] * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
            fields.append(mean[:, None, :])
        e = jnp.concatenate(fields, axis=1)  # [B, fields, dim]
        a, b = np.triu_indices(e.shape[1], k=1)
        products = jnp.einsum("bfd,bgd->bfg", e, e)[:, a, b] * self.product_scale
        h = jnp.concatenate([e.reshape(batch, -1), products, inputs.dense], axis=1)
        layers = len(self.hidden) + 1
        for i in range(layers):
            h = h @ params[f"layer{i}.w"] + params[f"layer{i}.b"]
            if i < layers - 1:
                h = jax.nn.relu(h)
        return h[:, 0] + inputs.wide
