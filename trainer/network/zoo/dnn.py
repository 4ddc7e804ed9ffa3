"""``dnn``: the CTR-DNN, the default network.

Per example (``F`` pooled slots, embedding width ``dim``, ``D`` dense features)::

    x     = concat(pooled.reshape(F * dim), dense)        # F*dim + D
    h     = relu(x W_0 + b_0) ... relu(. W_k + b_k)         # options.hidden widths
    logit = h W_out + b_out + wide                          # wide = sum of the 1-wide weights

Sequence slots, if any, are not used (their ids still count in ``wide``). Hidden layers start
He-uniform, the output layer Glorot-uniform scaled by 0.1 (a near-constant first prediction),
biases at 0.

Options (``[network.options]``): ``hidden`` = MLP widths, default ``[64, 32]``; ``[]`` is a
linear model on ``x``.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from trainer.network.api import InputSpec, Inputs


def network(spec: InputSpec, hidden=(64, 32)) -> "DNN":
    widths = tuple(hidden)
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise ValueError(f"hidden: widths must be integers >= 1, got {list(widths)}")
    if spec.num_fields * spec.dim + spec.dense_dim < 1:
        raise ValueError("the network has no input (no pooled slots and no dense features)")
    return DNN(spec, widths)


@dataclass(frozen=True)
class DNN:
    spec: InputSpec
    hidden: tuple[int, ...]

    def _shapes(self):
        fan_in = self.spec.num_fields * self.spec.dim + self.spec.dense_dim
        for i, width in enumerate(self.hidden):
            yield f"h{i}", fan_in, width
            fan_in = width
        yield "out", fan_in, 1

    def init(self, key):
        params = {}
        for name, fan_in, width in self._shapes():
            key, sub = jax.random.split(key)
            r = (0.1 * jnp.sqrt(6.0 / (fan_in + width)) if name == "out"
                 else jnp.sqrt(6.0 / fan_in))
            params[f"{name}.w"] = jax.random.uniform(sub, (fan_in, width), jnp.float32, -r, r)
            params[f"{name}.b"] = jnp.zeros((width,), jnp.float32)
        return params

    def apply(self, params, inputs: Inputs):
        batch = inputs.wide.shape[0]
        h = jnp.concatenate([inputs.pooled.reshape(batch, -1), inputs.dense], axis=1)
        for i in range(len(self.hidden)):
            h = jax.nn.relu(h @ params[f"h{i}.w"] + params[f"h{i}.b"])
        return (h @ params["out.w"] + params["out.b"])[:, 0] + inputs.wide
