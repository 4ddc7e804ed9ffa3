"""The flat dense vector: how a network's parameter dict becomes the one float32 vector the
servers hold, and back. numpy only (servers and ``predict`` use it without JAX).

Order: parameters sorted by name, each raveled in C order. So ``{"w": (2, 2), "b": (2,)}``
flattens to ``[b0, b1, w00, w01, w10, w11]``. The order is part of the saved model
(``dense.npz`` ``params``) and is recorded, with the shapes, in each version's ``meta.json``.

>>> layout = ParamLayout({"w": (2, 2), "b": (2,)})
>>> layout.names, layout.num_params
(('b', 'w'), 6)
>>> vec = layout.flatten({"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)})
>>> vec.tolist()
[0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
>>> layout.unflatten(vec)["w"].shape
(2, 2)
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["ParamLayout"]


class ParamLayout:
    """Names, shapes and offsets of a network's parameters in the flat vector.

    Parameters
    ----------
    shapes : mapping of str to tuple of int
        Parameter name -> shape (any order: the layout sorts by name).
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]):
        self.shapes = {name: tuple(int(d) for d in shapes[name]) for name in sorted(shapes)}
        self.names = tuple(self.shapes)
        sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes.values()]
        self.offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]))
        self.num_params = self.offsets[-1]

    @classmethod
    def of(cls, params: Mapping) -> "ParamLayout":
        """The layout of a parameter dict (arrays or ``jax.ShapeDtypeStruct``)."""
        return cls({name: tuple(value.shape) for name, value in params.items()})

    @classmethod
    def from_record(cls, record: list) -> "ParamLayout":
        """Inverse of :meth:`record`."""
        return cls({name: tuple(shape) for name, shape in record})

    def record(self) -> list:
        """``[[name, [shape...]], ...]`` in flat order: what ``meta.json`` stores."""
        return [[name, list(shape)] for name, shape in self.shapes.items()]

    def slices(self):
        """``(name, start, stop, shape)`` of each parameter, in flat order."""
        for i, (name, shape) in enumerate(self.shapes.items()):
            yield name, self.offsets[i], self.offsets[i + 1], shape

    def flatten(self, params: Mapping, out: np.ndarray | None = None) -> np.ndarray:
        """One contiguous float32 vector of ``params`` (names and shapes must match)."""
        missing = sorted(set(self.names) ^ set(params))
        if missing:
            raise ValueError(f"dense parameters: {missing[0]!r} is not in both the layout and the "
                             f"parameters")
        if out is None:
            out = np.empty(self.num_params, np.float32)
        for name, lo, hi, shape in self.slices():
            value = np.asarray(params[name])
            if value.shape != shape:
                raise ValueError(f"dense parameter {name}: expected shape {shape}, got {value.shape}")
            out[lo:hi] = value.ravel()
        return out

    def unflatten(self, vec: np.ndarray) -> dict[str, np.ndarray]:
        """Views of ``vec`` (no copy) shaped as the parameters."""
        vec = np.asarray(vec)
        if vec.shape != (self.num_params,):
            raise ValueError(f"dense vector: expected shape ({self.num_params},), got {vec.shape}")
        return {name: vec[lo:hi].reshape(shape) for name, lo, hi, shape in self.slices()}

    def first_difference(self, other: "ParamLayout") -> str | None:
        """A sentence naming the first parameter (in flat order) that differs, or None.

        >>> ParamLayout({"a": (2,), "b": (3,)}).first_difference(ParamLayout({"a": (2,), "b": (4,)}))
        "parameter 'b' has shape (3,) here, (4,) there"
        """
        for name in sorted(set(self.names) | set(other.names)):
            mine, theirs = self.shapes.get(name), other.shapes.get(name)
            if mine == theirs:
                continue
            if mine is None:
                return f"parameter {name!r} is missing here (shape {theirs} there)"
            if theirs is None:
                return f"parameter {name!r} (shape {mine}) is missing there"
            return f"parameter {name!r} has shape {mine} here, {theirs} there"
        return None

    def __eq__(self, other) -> bool:
        return isinstance(other, ParamLayout) and self.shapes == other.shapes

    def __repr__(self) -> str:
        return f"ParamLayout({len(self.names)} arrays, {self.num_params} values)"
