"""Reusable checks of a network through the whole training step (for the zoo's tests too).

``check_network_gradients(network_factory, spec)`` builds a small batch by hand (duplicate ids,
an id shared by two slot columns, a row without features, sequence slots with padding and an id
that is both in a sequence and pooled), runs :class:`trainer.network.step.Step` in float64, and
compares against central finite differences of the step's own loss:

- the pushed sparse gradients (divided by the batch's row count ``n``) against d loss / d rows,
  every coordinate of every pulled row: this goes through pooling, the wide sum, the sequence
  gather and back;
- the flat dense gradient against d loss / d params, on a sample of coordinates.

Import as ``from tests.trainer.network_checks import check_network_gradients``.
"""
from __future__ import annotations

import jax
import numpy as np

from trainer.network.api import InputSpec
from trainer.network.layout import ParamLayout
from trainer.network.load import Built
from trainer.network.step import Step
from trainer.reader import Batch, dedup

__all__ = ["check_network_gradients", "hand_made_batch"]


def hand_made_batch(spec: InputSpec, n: int = 5, seed: int = 0, shows: bool = True):
    """A batch of ``n`` rows for ``spec`` with every case the pooling must handle."""
    rng = np.random.default_rng(seed)
    F = spec.num_fields
    example, field, keys, slots = [], [], [], []

    def occur(row, f, key, slot):
        example.append(row), field.append(f), keys.append(key), slots.append(slot)
        return len(keys) - 1

    for row in range(n - 1):  # the last row has no features
        for f in range(F):
            for _ in range(int(rng.integers(0 if f else 1, 3))):
                occur(row, f, int(rng.integers(0, 4)), f)  # few ids: duplicates
    if F >= 2:
        occur(0, 1, 2, 0)  # id 2 of slot 1's column, stored in table slot 0 (shared table)
    sequences = {}
    for s, (name, max_len) in enumerate(spec.sequences.items()):
        table_slot = F + s
        index = np.full((n, max_len), -1, np.int64)
        for row in range(n - 1):
            for pos in range(int(rng.integers(0, max_len + 1))):  # some rows padded, one empty
                key = int(rng.integers(0, 3))
                index[row, pos] = occur(row, -1, key, table_slot)
        if F:  # an id both in the sequence and pooled in slot column 0 (same table slot)
            index[0, 0] = occur(0, -1, keys[0], slots[0])
        sequences[name] = index
    batch = Batch(
        labels=rng.integers(0, 2, n).astype(np.float32),
        shows=(rng.integers(1, 4, n) if shows else np.ones(n)).astype(np.float32),
        dense=rng.normal(size=(n, spec.dense_dim)).astype(np.float32),
        keys=np.array(keys, np.uint64), slots=np.array(slots, np.int32),
        field=np.array(field, np.int32), example=np.array(example, np.int32), has_shows=shows)
    batch.sequences = sequences
    return batch


def _central(f, x: np.ndarray, coords, eps: float = 1e-6) -> np.ndarray:
    out = np.zeros(len(coords))
    for i, c in enumerate(coords):
        old = x[c]
        x[c] = old + eps
        up = f(x)
        x[c] = old - eps
        down = f(x)
        x[c] = old
        out[i] = (up - down) / (2 * eps)
    return out


def check_network_gradients(network_factory, spec: InputSpec, *, n: int = 5, batch_size: int = 8,
                            dense_coords: int = 40, seed: int = 0, rtol: float = 1e-5,
                            atol: float = 1e-8) -> None:
    """Assert the step's pushed gradients of ``network_factory(spec)`` match finite differences.

    Parameters
    ----------
    network_factory : callable
        ``network_factory(spec) -> Network`` (e.g. ``lambda spec: dnn.network(spec, hidden=[4])``).
    spec : InputSpec
        Small shapes keep it fast (a few slots, dim 3, sequences of length <= 4).
    n, batch_size : int
        Real rows, and the padded step size (``n < batch_size`` checks padding carries nothing).
    dense_coords : int
        How many flat parameter coordinates to check (all if there are fewer).
    """
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        network = network_factory(spec)
        params = {k: np.asarray(v, np.float64) for k, v in network.init(jax.random.PRNGKey(seed)).items()}
        layout = ParamLayout.of(params)
        # perturb so biases are non-zero and every path carries gradient
        flat = layout.flatten(params, out=np.empty(layout.num_params, np.float64))
        flat += 0.1 * rng.normal(size=flat.shape)
        step = Step(Built(network, spec, layout, source=None), batch_size, dtype=np.float64)
        batch = hand_made_batch(spec, n=n, seed=seed)
        features = dedup(batch)
        rows = rng.normal(size=(len(features.keys), 1 + spec.dim)) * 0.5
        result = step.train(flat, batch, features, rows)
        assert result.sparse_grads.shape == rows.shape
        assert np.all(np.isfinite(result.probs)) and result.probs.shape == (n,)

        def loss_of_rows(r):
            return step.train(flat, batch, features, r.reshape(rows.shape)).loss

        def loss_of_params(p):
            return step.train(p, batch, features, rows).loss

        numeric = _central(loss_of_rows, rows.reshape(-1), range(rows.size))
        np.testing.assert_allclose(result.sparse_grads.reshape(-1) / n, numeric, rtol=rtol,
                                   atol=atol, err_msg="sparse gradients (pushed / n)")
        coords = (np.arange(layout.num_params) if layout.num_params <= dense_coords
                  else rng.choice(layout.num_params, dense_coords, replace=False))
        numeric = _central(loss_of_params, flat, coords)
        np.testing.assert_allclose(result.dense_grads[coords], numeric, rtol=rtol, atol=atol,
                                   err_msg="dense gradients")
