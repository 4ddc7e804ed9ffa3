"""Small building blocks the zoo's networks share: dense layers, MLPs and option checks.

Parameters live in one flat dict (``name -> array``, see :class:`trainer.network.api.Network`);
a layer named ``"deep.0"`` owns ``"deep.0.w"`` ``[fan_in, fan_out]`` and ``"deep.0.b"``
``[fan_out]``. Every function is pure, so ``jax.jit`` and ``jax.grad`` see through them.

>>> import jax
>>> params = mlp_init(jax.random.PRNGKey(0), "deep", [4, 3, 1])
>>> sorted((name, p.shape) for name, p in params.items())
[('deep.0.b', (3,)), ('deep.0.w', (4, 3)), ('deep.1.b', (1,)), ('deep.1.w', (3, 1))]
>>> mlp_apply(params, "deep", jax.numpy.ones((2, 4))).shape
(2, 1)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

__all__ = ["dense_init", "mlp_init", "mlp_apply", "field_embeddings", "flat_input", "widths", "count"]


def dense_init(key, name: str, fan_in: int, fan_out: int, *, relu: bool = True) -> dict:
    """One dense layer: He-normal weights (``sqrt(2 / fan_in)``; ``sqrt(1 / fan_in)`` when no
    ReLU follows) and zero bias, float32."""
    scale = (2.0 if relu else 1.0) / max(fan_in, 1)
    w = jax.random.normal(key, (fan_in, fan_out), jnp.float32) * jnp.sqrt(scale).astype(jnp.float32)
    return {f"{name}.w": w, f"{name}.b": jnp.zeros((fan_out,), jnp.float32)}


def mlp_init(key, prefix: str, sizes: Sequence[int]) -> dict:
    """Layers ``prefix.0`` .. ``prefix.{n-2}`` mapping ``sizes[0]`` -> ... -> ``sizes[-1]``; the
    last layer is linear (no ReLU after it)."""
    params = {}
    last = len(sizes) - 2
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        params.update(dense_init(jax.random.fold_in(key, i), f"{prefix}.{i}", a, b, relu=i < last))
    return params


def mlp_apply(params: Mapping[str, Any], prefix: str, x):
    """Apply the layers ``prefix.0, prefix.1, ...``: ReLU between them, none after the last."""
    i = 0
    while f"{prefix}.{i}.w" in params:
        if i:
            x = jax.nn.relu(x)
        x = x @ params[f"{prefix}.{i}.w"] + params[f"{prefix}.{i}.b"]
        i += 1
    return x


def field_embeddings(inputs, sequences: Sequence[str]):
    """``[B, F + S, dim]``: the pooled slots, then the masked sum of each named sequence slot (how
    a model without attention sees a sequence: as one more pooled field)."""
    summed = [jnp.sum(inputs.sequences[n] * inputs.masks[n][:, :, None], axis=1) for n in sequences]
    return jnp.concatenate([inputs.pooled, *(s[:, None, :] for s in summed)], axis=1)


def flat_input(fields, dense):
    """``[B, K * dim + D]``: the field embeddings side by side, then the dense features."""
    return jnp.concatenate([fields.reshape(fields.shape[0], -1), dense], axis=1)


def widths(option: str, value) -> tuple[int, ...]:
    """Check a list of layer widths (each an integer >= 1); ``ValueError`` names ``option``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{option}: must be a list of layer widths, got {value!r}")
    for width in value:
        count(option, width, minimum=1)
    return tuple(int(w) for w in value)


def count(option: str, value, *, minimum: int) -> int:
    """Check an integer option >= ``minimum``; ``ValueError`` names ``option``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{option}: must be an integer >= {minimum}, got {value!r}")
    return int(value)
