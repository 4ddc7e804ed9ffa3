"""One batch through the network: pooling, the jitted JAX forward/backward, the gradients to push.

Per batch of ``n`` rows (padded to ``B`` = ``train.batch_size`` rows of zero weight, so one
compiled step serves the hour):

1. **Inputs** (numpy, :func:`make_inputs`): the pulled rows of the batch's unique features are
   sum-pooled per (row, pooled slot) into ``pooled [B, F, dim]``, their 1-wide weights summed per
   row into ``wide [B]`` (sequence ids included), and each sequence slot's ids gathered into
   ``sequences[name] [B, L, dim]`` with ``masks[name]``.
2. **Step** (JAX, one jitted ``jax.value_and_grad``): ``logits = network.apply(params, inputs)``,
   ``p = sigmoid(logits)``, and the show-weighted mean log loss
   ``L = sum_i w_i * logloss(y_i, p_i) / sum_i w_i`` (``w_i`` = the row's show, 1 without a show
   column, 0 for padding). Differentiated with respect to the flat parameter vector and to
   ``pooled``, ``wide`` and ``sequences``. The predictions are made before anything learns
   (progressive validation); nothing given is mutated.
3. **Sparse gradients** (numpy, :func:`unpool`): the transpose of step 1, per unique feature,
   scaled by ``n`` (as PaddlePaddle's ``scale_sparse_grad``): a feature receives the *sum* over
   its occurrences of the per-example loss gradient, independent of the batch size (the table's
   rule divides by the pushed shows). The dense gradient stays that of the mean ``L`` (what
   ``network.learning_rate`` is tuned for).

Parameters travel as one float32 vector (:class:`trainer.network.layout.ParamLayout`); the step
slices it inside the jitted function, and returns the dense gradient flat too.

JAX is imported here and by the networks only: server ranks never import this module. XLA runs
on one thread per rank (``trainer/network/__init__.py`` sets ``XLA_FLAGS``), and
:func:`use_compile_cache` points JAX's persistent compilation cache at a directory so the
hour's compile is a cache read.
"""
from __future__ import annotations

import os
import time
from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from trainer.network.api import Inputs
from trainer.network.load import Built

__all__ = ["use_compile_cache", "make_inputs", "unpool", "StepResult", "Step",
           "NonFiniteOutputError"]


def use_compile_cache(directory: str) -> None:
    """Store and reuse compiled steps in ``directory`` (JAX's persistent compilation cache)."""
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class NonFiniteOutputError(ValueError):
    """The network returned NaN or inf (or its gradient is not finite); names batch and output."""


class BatchInputs(NamedTuple):
    """A padded batch in numpy, and what :func:`unpool` needs to send gradients back."""

    inputs: Inputs  #: numpy arrays, padded to B rows
    labels: np.ndarray  #: [B]
    weights: np.ndarray  #: [B], 0 for padding
    n: int  #: real rows
    pooled_target: np.ndarray  #: int64 [k]: row * F + field of each pooled occurrence
    pooled_unique: np.ndarray  #: int64 [k]: its unique feature
    wide_example: np.ndarray  #: int64 [m]: row of every occurrence
    wide_unique: np.ndarray  #: int64 [m]: its unique feature
    sequence_unique: dict  #: name -> int64 [B, L]: unique feature at each position (0 where padded)


def make_inputs(spec, batch, features, rows: np.ndarray, batch_size: int,
                dtype=np.float32) -> BatchInputs:
    """Pool a :class:`trainer.reader.Batch` into the network's inputs (see the module docstring).

    ``features`` is ``trainer.reader.dedup(batch)`` and ``rows`` the pulled table rows of its
    unique features (``[u, 1 + dim]``, column 0 = the 1-wide weight; zeros if not admitted).
    """
    n, dim, num_fields = batch.num_rows, spec.dim, spec.num_fields
    if n > batch_size:
        raise ValueError(f"batch of {n} rows is larger than the step's {batch_size}")
    rows = np.asarray(rows, dtype)
    if rows.shape != (len(features.keys), 1 + dim):
        raise ValueError(f"rows: expected shape ({len(features.keys)}, {1 + dim}), got {rows.shape}")
    example = np.asarray(batch.example, np.int64)
    unique = np.asarray(features.inverse, np.int64)
    pooled_occ = np.flatnonzero(np.asarray(batch.field) >= 0)
    target = example[pooled_occ] * num_fields + np.asarray(batch.field, np.int64)[pooled_occ]
    pooled_unique = unique[pooled_occ]
    picked = rows[pooled_unique]
    pooled = np.zeros((batch_size * num_fields, dim), dtype)
    for j in range(dim):
        pooled[: n * num_fields, j] = np.bincount(target, weights=picked[:, 1 + j],
                                                  minlength=n * num_fields)
    wide = np.zeros(batch_size, dtype)
    wide[:n] = np.bincount(example, weights=rows[unique, 0], minlength=n)
    dense = np.zeros((batch_size, spec.dense_dim), dtype)
    dense[:n] = batch.dense
    sequences, masks, sequence_unique = {}, {}, {}
    given = getattr(batch, "sequences", None) or {}
    for name, max_len in spec.sequences.items():
        index = np.full((batch_size, max_len), -1, np.int64)
        if name in given:
            got = np.asarray(given[name], np.int64)
            if got.shape[0] != n or got.shape[1] > max_len:
                raise ValueError(f"sequence {name!r}: expected shape ({n}, <= {max_len}), "
                                 f"got {got.shape}")
            index[:n, : got.shape[1]] = got
        real = index >= 0
        at = np.where(real, unique[np.where(real, index, 0)] if unique.size else 0, 0)
        sequence_unique[name] = at
        masks[name] = real.astype(dtype)
        sequences[name] = (rows[at, 1:] * masks[name][..., None] if rows.size
                           else np.zeros((batch_size, max_len, dim), dtype))
    labels = np.zeros(batch_size, dtype)
    labels[:n] = batch.labels
    weights = np.zeros(batch_size, dtype)
    weights[:n] = batch.shows if batch.has_shows else 1.0
    inputs = Inputs(pooled=pooled.reshape(batch_size, num_fields, dim), wide=wide, dense=dense,
                    sequences=sequences, masks=masks)
    return BatchInputs(inputs, labels, weights, n, target, pooled_unique, example, unique,
                       sequence_unique)


def unpool(prepared: BatchInputs, d_pooled, d_wide, d_sequences, n_unique: int,
           scale: float) -> np.ndarray:
    """Per-unique-feature gradients ``[u, 1 + dim]`` (C-contiguous): the transpose of
    :func:`make_inputs`, times ``scale``. A feature occurring several times gets the sum."""
    d_pooled = np.asarray(d_pooled)
    batch_size, num_fields, dim = d_pooled.shape
    flat = d_pooled.reshape(batch_size * num_fields, dim)
    out = np.zeros((n_unique, 1 + dim), np.float64 if d_pooled.dtype == np.float64 else np.float32)
    out[:, 0] = np.bincount(prepared.wide_unique, weights=np.asarray(d_wide)[prepared.wide_example],
                            minlength=n_unique)
    g = flat[prepared.pooled_target]
    for j in range(dim):
        out[:, 1 + j] = np.bincount(prepared.pooled_unique, weights=g[:, j], minlength=n_unique)
    for name, at in prepared.sequence_unique.items():
        real = prepared.inputs.masks[name] > 0
        g = np.asarray(d_sequences[name])[real]
        for j in range(dim):
            out[:, 1 + j] += np.bincount(at[real], weights=g[:, j], minlength=n_unique)
    out *= scale
    return out


class StepResult(NamedTuple):
    """What :meth:`Step.train` returns (arrays of the real rows only)."""

    probs: np.ndarray  #: [n] predictions, made before learning (progressive validation)
    logits: np.ndarray  #: [n]
    loss: float  #: show-weighted mean log loss of those predictions
    dense_grads: np.ndarray  #: [num_params] flat dL/dparams (of the mean loss)
    sparse_grads: np.ndarray  #: [u, 1 + dim] per unique feature, scaled by n


def _loss_and_logits(network, prior_logit, params, pooled, wide, sequences, dense, masks, labels,
                     weights):
    logits = network.apply(params, Inputs(pooled, wide, dense, sequences, masks)) + prior_logit
    per_row = jnp.logaddexp(0.0, logits) - labels * logits  # log loss from logits, stable
    total = jnp.sum(weights)
    loss = jnp.sum(per_row * weights) / jnp.where(total > 0, total, 1.0)
    return loss, logits


class Step:
    """The compiled train and predict steps of one network for batches of ``batch_size`` rows.

    Parameters
    ----------
    built : trainer.network.load.Built
    batch_size : int
        ``B``: every batch is padded to it.
    dtype : numpy dtype
        float32 (float64 for gradient checks, under ``jax.enable_x64``).
    prior_logit : float
        Added to every logit (the chain's cold-start prior,
        :func:`trainer.network.load.prior_logit_of`); a constant of the compiled step.
    """

    def __init__(self, built: Built, batch_size: int, dtype=np.float32, prior_logit: float = 0.0):
        self.built, self.spec, self.layout = built, built.spec, built.layout
        self.batch_size, self.dtype = int(batch_size), np.dtype(dtype)
        self.prior_logit = float(prior_logit)
        network, layout = built.network, built.layout

        def unflatten(flat):
            return {name: flat[lo:hi].reshape(shape) for name, lo, hi, shape in layout.slices()}

        def loss(params, *args):
            return _loss_and_logits(network, self.prior_logit, params, *args)

        grad = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)

        def train(flat, *args):
            # Differentiated with respect to the parameter dict, then concatenated: the gradient
            # of the slicing itself (one pad-and-add per parameter over the whole vector) is
            # what XLA would otherwise build.
            (value, logits), (d_params, *d_inputs) = grad(unflatten(flat), *args)
            d_flat = jnp.concatenate([d_params[name].ravel() for name in layout.names]
                                     or [jnp.zeros((0,), flat.dtype)])  # a network may have none
            finite = jnp.isfinite(logits).all() & jnp.isfinite(d_flat).all()
            return value, logits, jax.nn.sigmoid(logits), (d_flat, *d_inputs), finite

        def predict(flat, *args):
            return jax.nn.sigmoid(loss(unflatten(flat), *args)[1])

        self._train, self._predict = jax.jit(train), jax.jit(predict)
        self._compiled: dict = {}
        self.compile_seconds = 0.0

    def _abstract(self):
        f = self.dtype
        B, spec = self.batch_size, self.spec

        def a(*shape):
            return jax.ShapeDtypeStruct(shape, f)

        return (a(self.layout.num_params), a(B, spec.num_fields, spec.dim), a(B),
                {s: a(B, n, spec.dim) for s, n in spec.sequences.items()}, a(B, spec.dense_dim),
                {s: a(B, n) for s, n in spec.sequences.items()}, a(B), a(B))

    def compiled(self, which: str):
        """The compiled ``"train"`` or ``"predict"`` executable (compiled once, cache-backed)."""
        if which not in self._compiled:
            started = time.perf_counter()
            jitted = self._train if which == "train" else self._predict
            self._compiled[which] = jitted.lower(*self._abstract()).compile()
            self.compile_seconds += time.perf_counter() - started
        return self._compiled[which]

    def _args(self, flat, prepared: BatchInputs):
        flat = np.asarray(flat, self.dtype)
        if flat.shape != (self.layout.num_params,):
            raise ValueError(f"dense vector: expected shape ({self.layout.num_params},), "
                             f"got {flat.shape}")
        x = prepared.inputs
        return (flat, x.pooled, x.wide, x.sequences, x.dense, x.masks, prepared.labels,
                prepared.weights)

    def train(self, flat, batch, features, rows) -> StepResult:
        """Predict ``batch``, then the gradients to push (see the module docstring)."""
        prepared = make_inputs(self.spec, batch, features, rows, self.batch_size, self.dtype)
        loss, logits, probs, grads, finite = self.compiled("train")(*self._args(flat, prepared))
        n = prepared.n
        logits = np.asarray(logits)[:n]
        d_flat, d_pooled, d_wide, d_sequences = grads
        d_flat = np.asarray(d_flat)
        if not finite:
            _check_finite(batch, logits, d_flat)
        sparse = unpool(prepared, d_pooled, d_wide, d_sequences, len(features.keys), float(n))
        return StepResult(np.asarray(probs)[:n], logits, float(loss), d_flat, sparse)

    def predict(self, flat, batch, features, rows) -> np.ndarray:
        """Predicted click probabilities ``[n]`` (the same forward pass as :meth:`train`)."""
        prepared = make_inputs(self.spec, batch, features, rows, self.batch_size, self.dtype)
        return np.asarray(self.compiled("predict")(*self._args(flat, prepared)))[: prepared.n]


def _check_finite(batch, logits: np.ndarray, d_flat: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(logits))
    if bad.size:
        i = int(bad[0])
        raise NonFiniteOutputError(f"network output {i} of the batch {_where(batch)} is "
                                   f"{logits[i]} ({bad.size} non-finite output(s))")
    bad = np.flatnonzero(~np.isfinite(d_flat))
    if bad.size:
        raise NonFiniteOutputError(f"the dense gradient of the batch {_where(batch)} is not "
                                   f"finite at flat index {int(bad[0])} ({bad.size} values)")


def _where(batch) -> str:
    sources = getattr(batch, "sources", ())
    if not sources:
        return f"of {batch.num_rows} rows"
    path, first, _rows = sources[0]
    return f"starting at {path} row {first} ({batch.num_rows} rows)"
