"""What a network is: the interface a user's dense model is written against.

A network maps one batch to logits. It never writes a gradient: the framework differentiates it
with JAX (``jax.value_and_grad``), pushes the sparse gradients (pooled, wide and sequence inputs)
to the table and the dense gradients (its parameters, flattened to one vector) to the servers.

A network is made by a *factory*, named by the config's ``[network] model``: a zoo name
(``trainer/network/zoo/<name>.py``) or ``"path/to/file.py:factory"``. The factory is called as
``factory(spec, **options)`` with ``options`` = ``[network.options]`` and returns a
:class:`Network`. A zoo module's factory is its function ``network``. ``docs/models.md`` shows
how to write one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Protocol, runtime_checkable

__all__ = ["InputSpec", "Inputs", "Network"]


@dataclass(frozen=True)
class InputSpec:
    """The shapes a network is given, from the model config (batch size excluded).

    Attributes
    ----------
    slots : tuple of str
        Pooled slot columns, in config order (``columns.slots`` minus the sequence slots):
        ``Inputs.pooled[:, f]`` is the sum-pooled embedding of ``slots[f]``.
    dim : int
        Embedding width (``table.dim``).
    dense_dim : int
        Width of ``Inputs.dense``.
    sequences : dict of str to int
        Sequence slot -> ``max_len`` (``columns.sequences``), in config order.
    """

    slots: tuple[str, ...]
    dim: int
    dense_dim: int
    sequences: Mapping[str, int] = field(default_factory=dict)

    @property
    def num_fields(self) -> int:
        return len(self.slots)


class Inputs(NamedTuple):
    """One batch as the network sees it (JAX arrays, float32; ``B`` = the padded batch size).

    Padding rows (the last batch is padded to a fixed ``B`` = ``train.batch_size`` so one
    compiled step serves the hour) are zeros and carry no weight in the loss.

    ``pooled``, ``wide`` and ``sequences`` are differentiated: their gradients are pushed back
    to the table rows of the ids they were made from. ``dense`` and ``masks`` are data.
    """

    pooled: Any  #: [B, F, dim]: per-slot sum of the embeddings of the row's ids
    wide: Any  #: [B]: sum of the 1-wide weights of all the row's ids (sequence ids included)
    dense: Any  #: [B, D]: dense features
    #: name -> [B, L, dim] (``L`` = the slot's ``max_len``): the embeddings of the kept ids (the
    #: newest ``max_len`` of the row's list), in list order from position 0, then zero padding
    sequences: Mapping[str, Any]
    masks: Mapping[str, Any]  #: name -> [B, L]: 1.0 for a real id, 0.0 for padding


@runtime_checkable
class Network(Protocol):
    """A dense model: its parameters and its forward pass.

    ``init(key)`` returns the initial parameters, a dict of name -> float32 array (a flat dict;
    names are what ``meta.json`` records and what a chain is checked against), deterministic in
    the JAX PRNG key. ``apply(params, inputs)`` returns the logits ``[B]`` (the framework applies
    the sigmoid and the show-weighted log loss). Both must be pure functions of their arguments
    (``apply`` is traced by ``jax.jit``).
    """

    def init(self, key) -> dict[str, Any]: ...

    def apply(self, params: Mapping[str, Any], inputs: Inputs) -> Any: ...
