"""DIN, the Deep Interest Network (Zhou et al., 2018): target attention over a behaviour sequence.

A user's history (a sequence slot, e.g. the items they clicked, ``[columns] sequences``) is not
summed blindly: each history id ``k`` is weighted by how relevant it is to the row's target id
``q`` (a pooled slot, e.g. the item shown), with an attention MLP over ``[q, k, q - k, q * k]``.
Padding is masked out and the weights are not normalised (as in the paper: the interest's norm
tells how much of the history matches). The interest vector joins the other slots (further
sequence slots sum-pooled) and the dense features in an MLP.

``logit = wide + mlp([embeddings, interest, dense])``. Options: ``target`` (a pooled slot, required),
``sequence`` (a sequence slot, required; give it a shared table with ``target`` so history ids and
the target id are the same rows: ``[columns] shared_tables``), ``attention_hidden`` (the attention
MLP's widths, default ``[36]``), ``hidden`` (the MLP's widths, default ``[64, 32]``).

>>> import jax, jax.numpy as jnp
>>> from trainer.network.api import InputSpec, Inputs
>>> spec = InputSpec(slots=("user", "item"), dim=4, dense_dim=0, sequences={"history": 5})
>>> net = network(spec, target="item", sequence="history", hidden=[8])
>>> x = Inputs(jnp.ones((2, 2, 4)), jnp.zeros(2), jnp.zeros((2, 0)),
...            {"history": jnp.ones((2, 5, 4))}, {"history": jnp.ones((2, 5))})
>>> net.apply(net.init(jax.random.PRNGKey(0)), x).shape
(2,)
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from trainer.network.api import InputSpec, Inputs
from trainer.network.layers import field_embeddings, flat_input, mlp_apply, mlp_init, widths


@dataclass(frozen=True)
class DIN:
    spec: InputSpec
    target: str
    sequence: str
    attention_hidden: tuple[int, ...]
    hidden: tuple[int, ...]

    @property
    def other_sequences(self) -> tuple[str, ...]:
        return tuple(s for s in self.spec.sequences if s != self.sequence)

    def init(self, key) -> dict:
        spec = self.spec
        width = (spec.num_fields + len(self.other_sequences) + 1) * spec.dim + spec.dense_dim
        k_att, k_deep = jax.random.split(key)
        return {**mlp_init(k_att, "attention", [4 * spec.dim, *self.attention_hidden, 1]),
                **mlp_init(k_deep, "deep", [width, *self.hidden, 1])}

    def interest(self, params, inputs: Inputs):
        """``[B, dim]``: the attention-weighted sum of the sequence's embeddings."""
        keys, mask = inputs.sequences[self.sequence], inputs.masks[self.sequence]
        query = inputs.pooled[:, self.spec.slots.index(self.target), None, :]  # [B, 1, dim]
        query = jnp.broadcast_to(query, keys.shape)
        pairs = jnp.concatenate([query, keys, query - keys, query * keys], axis=-1)
        weights = mlp_apply(params, "attention", pairs)[..., 0] * mask  # [B, L]
        return jnp.einsum("bl,bld->bd", weights, keys)

    def apply(self, params, inputs: Inputs):
        fields = field_embeddings(inputs, self.other_sequences)
        fields = jnp.concatenate([fields, self.interest(params, inputs)[:, None, :]], axis=1)
        return inputs.wide + mlp_apply(params, "deep", flat_input(fields, inputs.dense))[:, 0]


def network(spec: InputSpec, target=None, sequence=None, attention_hidden=(36,),
            hidden=(64, 32)) -> DIN:
    """The zoo factory: ``[network] model = "din"``; options ``target``, ``sequence``,
    ``attention_hidden``, ``hidden``."""
    if target not in spec.slots:
        raise ValueError(f"target: must name a pooled slot (one of {', '.join(spec.slots)}; "
                         f"not a sequence slot), got {target!r}")
    if sequence not in spec.sequences:
        known = ", ".join(spec.sequences) or "none declared in [columns] sequences"
        raise ValueError(f"sequence: must name a sequence slot ({known}), got {sequence!r}")
    return DIN(spec, target, sequence, widths("attention_hidden", attention_hidden),
               widths("hidden", hidden))
