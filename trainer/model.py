"""The CTR-DNN: sum-pooled sparse embeddings + dense features -> MLP -> logit (+ wide part).

Per example ``i`` (``F`` slot columns, embedding width ``dim``, ``D`` dense features)::

    pooled_i = [ sum of the embeddings of the example's features in slot column f ]  for f < F
    x_i      = concat(pooled_i, dense_i)                       # F*dim + D
    h        = relu(x W_0 + b_0) ... relu(. W_k + b_k)          # network.hidden widths
    logit_i  = h W_out + b_out + wide_i                         # wide_i = sum of the 1-wide weights
    p_i      = sigmoid(logit_i)

Loss: the show-weighted mean log loss ``L = sum_i w_i * logloss(y_i, p_i) / sum_i w_i`` with
``w_i`` = the row's show (1 when there is no show column). A row with show ``s`` counts as ``s``
identical impressions, matching the show/click counters pushed to the table and the metrics.

Gradients: :func:`backward` returns exact gradients of ``L`` (dense layers, pooled input, wide
input). The sparse gradients pushed to the table are, like PaddlePaddle's ``scale_sparse_grad``,
scaled by the batch row count ``n`` (:func:`train_step` does it), so a feature receives the
*sum* over its occurrences of the per-example loss gradient, independent of the batch size. The
dense gradients stay those of the mean (what ``network.learning_rate`` is tuned for).

The dense parameters are a ``dict[str, ndarray]`` in a fixed order (:meth:`DenseLayout.shapes`);
:func:`flatten` / :func:`unflatten` turn them into one ``float32`` vector for MPI.

>>> layout = DenseLayout(num_fields=2, dim=4, dense_dim=3, hidden=(8,))
>>> params = init_dense(layout, seed=1)
>>> list(params), layout.input_dim, layout.num_params
(['h0.w', 'h0.b', 'out.w', 'out.b'], 11, 105)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "DenseLayout",
    "init_dense",
    "flatten",
    "unflatten",
    "sigmoid",
    "log_loss",
    "forward",
    "backward",
    "pool",
    "unpool_grads",
    "StepResult",
    "predict",
    "train_step",
    "DenseOptimizer",
]


@dataclass(frozen=True)
class DenseLayout:
    """Shapes of the dense network.

    Parameters
    ----------
    num_fields : int
        Slot columns pooled separately (``len(cfg.columns.slots)``; slots sharing a table are still
        pooled separately).
    dim : int
        Embedding width (``cfg.table.dim``).
    dense_dim : int
        Dense input width (``len(cfg.columns.dense)`` when all dense columns are scalars; see
        :func:`trainer.partition.check_schema` for fixed-size list columns).
    hidden : tuple of int
        MLP widths (``cfg.network.hidden``); empty = a linear model on ``x``.
    """

    num_fields: int
    dim: int
    dense_dim: int
    hidden: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("num_fields", "dim", "dense_dim"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"DenseLayout.{name}: expected >= 0, got {getattr(self, name)}")
        if self.input_dim < 1:
            raise ValueError("DenseLayout: the network has no input (no slots and no dense features)")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"DenseLayout.hidden: widths must be >= 1, got {list(self.hidden)}")

    @classmethod
    def from_config(cls, cfg, dense_dim: int | None = None) -> "DenseLayout":
        """Layout of model config ``cfg`` (``dense_dim`` defaults to one per dense column)."""
        return cls(
            num_fields=len(cfg.columns.slots),
            dim=int(cfg.table.dim),
            dense_dim=len(cfg.columns.dense) if dense_dim is None else int(dense_dim),
            hidden=tuple(cfg.network.hidden),
        )

    @property
    def input_dim(self) -> int:
        """``num_fields * dim + dense_dim``."""
        return self.num_fields * self.dim + self.dense_dim

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter names and shapes, in the fixed order used everywhere."""
        out: dict[str, tuple[int, ...]] = {}
        fan_in = self.input_dim
        for i, width in enumerate(self.hidden):
            out[f"h{i}.w"] = (fan_in, width)
            out[f"h{i}.b"] = (width,)
            fan_in = width
        out["out.w"] = (fan_in, 1)
        out["out.b"] = (1,)
        return out

    @property
    def num_params(self) -> int:
        return int(sum(np.prod(s) for s in self.shapes().values()))


def init_dense(layout: DenseLayout, seed: int) -> dict[str, np.ndarray]:
    """Deterministic initial dense parameters (float32).

    Hidden layers: He-uniform ``U(-sqrt(6/fan_in), sqrt(6/fan_in))``; output layer: Glorot-uniform
    scaled by 0.1 (a near-constant first prediction); biases 0.

    >>> a = init_dense(DenseLayout(1, 2, 0, (3,)), seed=5)
    >>> b = init_dense(DenseLayout(1, 2, 0, (3,)), seed=5)
    >>> all(np.array_equal(a[k], b[k]) for k in a)
    True
    """
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xC7D])
    params: dict[str, np.ndarray] = {}
    for name, shape in layout.shapes().items():
        if name.endswith(".b"):
            params[name] = np.zeros(shape, np.float32)
        elif name == "out.w":
            r = 0.1 * np.sqrt(6.0 / (shape[0] + shape[1]))
            params[name] = rng.uniform(-r, r, size=shape).astype(np.float32)
        else:
            r = np.sqrt(6.0 / shape[0])
            params[name] = rng.uniform(-r, r, size=shape).astype(np.float32)
    return params


def flatten(params: dict[str, np.ndarray], layout: DenseLayout, out: np.ndarray | None = None) -> np.ndarray:
    """Concatenate ``params`` (in layout order) into one contiguous float32 vector."""
    if out is None:
        out = np.empty(layout.num_params, np.float32)
    elif out.shape != (layout.num_params,):
        raise ValueError(f"out: expected shape ({layout.num_params},), got {out.shape}")
    pos = 0
    for name, shape in layout.shapes().items():
        a = params[name]
        if a.shape != shape:
            raise ValueError(f"dense parameter {name}: expected shape {shape}, got {a.shape}")
        out[pos : pos + a.size] = a.ravel()
        pos += a.size
    return out


def unflatten(vec: np.ndarray, layout: DenseLayout) -> dict[str, np.ndarray]:
    """Views of ``vec`` (no copy) shaped as ``layout``'s parameters.

    >>> layout = DenseLayout(1, 2, 1, (2,))
    >>> p = init_dense(layout, 0)
    >>> q = unflatten(flatten(p, layout), layout)
    >>> all(np.array_equal(p[k], q[k]) for k in p)
    True
    """
    vec = np.asarray(vec)
    if vec.shape != (layout.num_params,):
        raise ValueError(f"dense vector: expected shape ({layout.num_params},), got {vec.shape}")
    out, pos = {}, 0
    for name, shape in layout.shapes().items():
        size = int(np.prod(shape))
        out[name] = vec[pos : pos + size].reshape(shape)
        pos += size
    return out


# ---------------------------------------------------------------------------------------------
# elementwise pieces


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (no overflow warnings)."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def log_loss(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Weighted mean log loss from logits, ``softplus(z) - y*z`` (stable for any ``z``).

    >>> round(log_loss(np.zeros(2), np.array([0.0, 1.0])), 6)
    0.693147
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    per = np.logaddexp(0.0, z) - y * z
    if weights is None:
        return float(per.mean()) if per.size else 0.0
    w = np.asarray(weights, np.float64)
    total = w.sum()
    return float((per * w).sum() / total) if total > 0 else 0.0


def _buf(ws: dict | None, name: str, shape: tuple, dtype) -> np.ndarray:
    """A scratch array from workspace ``ws`` (reused while shape and dtype match)."""
    if ws is None:
        return np.empty(shape, dtype)
    a = ws.get(name)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = ws[name] = np.empty(shape, dtype)
    return a


# ---------------------------------------------------------------------------------------------
# dense network


def forward(params, pooled, dense_x, wide, workspace: dict | None = None):
    """Predict a batch.

    Parameters
    ----------
    params : dict of ndarray
        Dense parameters (:func:`init_dense`). Their dtype (float32; float64 in gradient checks)
        is the compute dtype.
    pooled : ndarray, shape (n, num_fields * dim)
    dense_x : ndarray, shape (n, dense_dim)
    wide : ndarray, shape (n,)
        Sum of each example's 1-wide weights (:func:`pool`).
    workspace : dict, optional
        Scratch buffers reused across calls (the returned arrays then live in it and are
        overwritten by the next call with the same workspace).

    Returns
    -------
    probs : ndarray, shape (n,)
    cache : dict
        What :func:`backward` needs (``x``, post-ReLU activations, ``logits``, ``probs``).
    """
    dtype = params["out.w"].dtype
    n = pooled.shape[0]
    pw, dw = pooled.shape[1], dense_x.shape[1]
    if dense_x.shape[0] != n or np.shape(wide) != (n,):
        raise ValueError(
            f"forward: pooled {pooled.shape}, dense_x {dense_x.shape} and wide {np.shape(wide)} disagree on n")
    in_dim = params["h0.w"].shape[0] if "h0.w" in params else params["out.w"].shape[0]
    if pw + dw != in_dim:
        raise ValueError(f"forward: input width {pw}+{dw} != {in_dim} expected by the parameters")
    x = _buf(workspace, "x", (n, in_dim), dtype)
    x[:, :pw] = pooled
    x[:, pw:] = dense_x
    acts = [x]
    i = 0
    while f"h{i}.w" in params:
        w, b = params[f"h{i}.w"], params[f"h{i}.b"]
        h = _buf(workspace, f"a{i}", (n, w.shape[1]), dtype)
        np.matmul(acts[-1], w, out=h)
        h += b
        np.maximum(h, 0, out=h)
        acts.append(h)
        i += 1
    logits = _buf(workspace, "logits", (n, 1), dtype)
    np.matmul(acts[-1], params["out.w"], out=logits)
    logits += params["out.b"]
    logits = logits.reshape(n)
    logits += wide
    probs = sigmoid(logits)
    return probs, {"acts": acts, "logits": logits, "probs": probs, "pooled_width": pw}


def backward(params, cache, labels, weights=None, workspace: dict | None = None):
    """Gradients of the weighted mean log loss ``L`` (see the module docstring).

    Parameters
    ----------
    params : dict of ndarray
    cache : dict
        From :func:`forward` on the same batch.
    labels : ndarray, shape (n,)
        0/1.
    weights : ndarray, shape (n,), optional
        Shows; ``None`` = every row weighs 1.

    Returns
    -------
    dense_grads : dict of ndarray
        ``dL/dparam`` for every dense parameter (new arrays).
    d_pooled : ndarray, shape (n, num_fields * dim)
        ``dL/dpooled``.
    d_wide : ndarray, shape (n,)
        ``dL/dwide`` (= ``dL/dlogit``).
    """
    acts, probs = cache["acts"], cache["probs"]
    dtype = probs.dtype
    n = probs.shape[0]
    dz = (probs - np.asarray(labels, dtype)).astype(dtype, copy=False)
    if weights is None:
        dz /= max(n, 1)
    else:
        w = np.asarray(weights, dtype)
        total = w.sum()
        dz *= w / total if total > 0 else 0
    grads: dict[str, np.ndarray] = {}
    d_wide = dz.copy()
    delta = dz.reshape(n, 1)
    layers = sum(1 for k in params if k.endswith(".w")) - 1
    w_next = params["out.w"]
    grads["out.w"] = acts[-1].T @ delta
    grads["out.b"] = delta.sum(axis=0)
    for i in range(layers - 1, -1, -1):
        d_act = _buf(workspace, f"d{i}", (n, w_next.shape[0]), dtype)
        np.matmul(delta, w_next.T, out=d_act)
        d_act *= acts[i + 1] > 0  # ReLU'
        delta = d_act
        w_next = params[f"h{i}.w"]
        grads[f"h{i}.w"] = acts[i].T @ delta
        grads[f"h{i}.b"] = delta.sum(axis=0)
    dx = delta @ w_next.T
    ordered = {k: grads[k] for k in params}  # layout order
    return ordered, dx[:, : cache["pooled_width"]], d_wide


# ---------------------------------------------------------------------------------------------
# sparse pooling


def pool(rows, inverse, example_index, field, n_examples: int, num_fields: int):
    """Sum-pool feature rows per (example, slot column).

    Parameters
    ----------
    rows : ndarray, shape (n_unique, 1 + dim)
        Pulled table rows of the batch's unique features (col 0 = 1-wide weight).
    inverse : ndarray of int, shape (m,)
        Unique-feature index of each feature occurrence (``Dedup.inverse``).
    example_index : ndarray of int, shape (m,)
        Example (row of the batch) of each occurrence.
    field : ndarray of int, shape (m,)
        Slot column (index in ``columns.slots``) of each occurrence.
    n_examples, num_fields : int

    Returns
    -------
    pooled : ndarray, shape (n_examples, num_fields * dim)
        Columns ``f*dim:(f+1)*dim`` are the sum of the embeddings of slot column ``f``.
    wide : ndarray, shape (n_examples,)
        Sum of the 1-wide weights of all the example's features.

    Examples
    --------
    >>> rows = np.array([[1, 1, 0], [2, 0, 1]], np.float32)      # 2 unique features, dim 2
    >>> pooled, wide = pool(rows, np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([0, 1, 1]), 2, 2)
    >>> pooled.tolist(), wide.tolist()
    ([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]], [3.0, 2.0])
    """
    rows = np.asarray(rows)
    dim = rows.shape[1] - 1
    inverse = np.asarray(inverse)
    ex = np.asarray(example_index, np.int64)
    target = ex * num_fields + np.asarray(field, np.int64)
    g = rows[inverse]
    wide = np.bincount(ex, weights=g[:, 0], minlength=n_examples).astype(rows.dtype, copy=False)
    pooled = np.empty((n_examples * num_fields, dim), rows.dtype)
    for j in range(dim):
        pooled[:, j] = np.bincount(target, weights=g[:, 1 + j], minlength=n_examples * num_fields)
    return pooled.reshape(n_examples, num_fields * dim), wide


def unpool_grads(d_pooled, d_wide, inverse, example_index, field, n_unique: int, dim: int,
                 scale: float = 1.0):
    """Per-unique-feature gradients from per-example ones: the transpose of :func:`pool`.

    Parameters
    ----------
    d_pooled : ndarray, shape (n_examples, num_fields * dim)
    d_wide : ndarray, shape (n_examples,)
    inverse, example_index, field : ndarray of int, shape (m,)
        As in :func:`pool`.
    n_unique : int
        Number of unique features (rows of the result).
    dim : int
        Embedding width.
    scale : float
        Multiplies every gradient (:func:`train_step` passes the batch size).

    Returns
    -------
    ndarray, shape (n_unique, 1 + dim), C-contiguous
        float32 (float64 when ``d_pooled`` is float64). Column 0 is the 1-wide weight's gradient,
        then the embedding's; a feature occurring several times gets the sum. What the worker
        pushes.

    Examples
    --------
    >>> g = unpool_grads(np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32), np.array([0.5, 1.0], np.float32),
    ...                  np.array([0, 1, 1]), np.array([0, 0, 1]), np.array([0, 1, 1]), 2, dim=2)
    >>> g.tolist()
    [[0.5, 1.0, 2.0], [1.5, 10.0, 12.0]]
    """
    d_pooled = np.asarray(d_pooled)
    n, width = d_pooled.shape
    if dim < 1 or width % dim:
        raise ValueError(f"unpool_grads: pooled width {width} is not a multiple of dim {dim}")
    num_fields = width // dim
    dtype = np.float64 if d_pooled.dtype == np.float64 else np.float32
    ex = np.asarray(example_index, np.int64)
    inverse = np.asarray(inverse, np.int64)
    target = ex * num_fields + np.asarray(field, np.int64)
    flat = d_pooled.reshape(n * num_fields, dim)
    out = np.empty((n_unique, 1 + dim), dtype)
    out[:, 0] = np.bincount(inverse, weights=np.asarray(d_wide)[ex], minlength=n_unique)
    g = flat[target]
    for j in range(dim):
        out[:, 1 + j] = np.bincount(inverse, weights=g[:, j], minlength=n_unique)
    if scale != 1.0:
        out *= scale
    return out


# ---------------------------------------------------------------------------------------------
# one batch, end to end


class StepResult(NamedTuple):
    """What :func:`train_step` returns."""

    probs: np.ndarray  #: float32 [n] predictions, made before learning (progressive validation)
    loss: float  #: weighted mean log loss of those predictions
    dense_grads: dict  #: dL/dparam for the dense network (mean loss)
    sparse_grads: np.ndarray  #: float32 [n_unique, 1+dim], scaled by n (see module docstring)


def _batch_inputs(batch, dedup, rows, num_fields):
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[0] != len(dedup.keys):
        raise ValueError(f"rows: expected shape ({len(dedup.keys)}, 1+dim), got {rows.shape}")
    n = batch.num_rows
    pooled, wide = pool(rows, dedup.inverse, batch.example, batch.field, n, num_fields)
    return pooled, wide


def predict(params, batch, dedup, rows, num_fields: int, workspace: dict | None = None) -> np.ndarray:
    """Predicted click probabilities (float32 [n]) of a :class:`trainer.reader.Batch`.

    ``dedup`` is ``trainer.reader.dedup(batch)`` and ``rows`` the pulled table rows of
    ``dedup.keys`` / ``dedup.slots`` (zeros for ids not admitted yet).
    """
    pooled, wide = _batch_inputs(batch, dedup, rows, num_fields)
    probs, _ = forward(params, pooled, batch.dense, wide, workspace)
    return probs.copy() if workspace is not None else probs


def train_step(params, batch, dedup, rows, num_fields: int, workspace: dict | None = None) -> StepResult:
    """Predict a batch, then compute the gradients to push. Mutates nothing it is given.

    Parameters
    ----------
    params : dict of ndarray
        Dense parameters (the worker's latest pull).
    batch : trainer.reader.Batch
    dedup : trainer.reader.Dedup
        ``dedup(batch)``.
    rows : ndarray float32, shape (n_unique, 1 + dim)
        Table rows of ``dedup.keys`` / ``dedup.slots``.
    num_fields : int
        ``len(cfg.columns.slots)``.
    workspace : dict, optional
        Scratch buffers kept by the worker between batches.

    Returns
    -------
    StepResult
        Predictions (for the metrics: made before the update), loss, dense gradients (of the mean
        loss) and sparse gradients (per unique feature, scaled by the batch size ``n``).
    """
    pooled, wide = _batch_inputs(batch, dedup, rows, num_fields)
    shows = batch.shows if batch.has_shows else None
    probs, cache = forward(params, pooled, batch.dense, wide, workspace)
    loss = log_loss(cache["logits"], batch.labels, shows)
    dense_grads, d_pooled, d_wide = backward(params, cache, batch.labels, shows, workspace)
    dim = np.asarray(rows).shape[1] - 1
    sparse = unpool_grads(d_pooled, d_wide, dedup.inverse, batch.example, batch.field,
                          len(dedup.keys), dim, scale=float(batch.num_rows))
    return StepResult(probs.copy(), loss, dense_grads, sparse)


# ---------------------------------------------------------------------------------------------
# dense optimizers (run on the servers)


class DenseOptimizer:
    """Dense optimizer rule: ``sgd``, ``adagrad`` or ``adam``; state is a flat ``dict`` of arrays.

    The rule is elementwise, so it works as well on a dict of named parameters as on
    ``{"all": flat_vector}`` (what an MPI server holding :func:`flatten`-ed parameters uses).

    Parameters
    ----------
    rule : {"sgd", "adagrad", "adam"}
    learning_rate : float
    beta1, beta2, epsilon : float
        Adam's; ``epsilon`` is also adagrad's denominator guard.
    initial_accumulator : float
        Adagrad's starting squared-gradient sum.

    State keys: adagrad ``"<name>.g2"``; adam ``"<name>.m"``, ``"<name>.v"`` and ``"step"``
    (float64 [1]); sgd none. Everything float32 except ``"step"``.

    Examples
    --------
    >>> opt = DenseOptimizer("adam", learning_rate=0.1)
    >>> p = {"w": np.ones(2, np.float32)}
    >>> s = opt.init_state(p)
    >>> opt.apply(p, {"w": np.array([1.0, -1.0], np.float32)}, s)
    >>> [round(float(w), 3) for w in p["w"]], s["step"].tolist()
    ([0.9, 1.1], [1.0])
    """

    RULES = ("sgd", "adagrad", "adam")

    def __init__(self, rule: str, learning_rate: float, *, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8, initial_accumulator: float = 0.1):
        if rule not in self.RULES:
            raise ValueError(f"dense optimizer rule: expected one of {', '.join(self.RULES)}, got {rule!r}")
        if not learning_rate > 0:
            raise ValueError(f"dense optimizer learning_rate: expected > 0, got {learning_rate}")
        self.rule = rule
        self.learning_rate = float(learning_rate)
        self.beta1, self.beta2, self.epsilon = float(beta1), float(beta2), float(epsilon)
        self.initial_accumulator = float(initial_accumulator)

    @classmethod
    def from_config(cls, network) -> "DenseOptimizer":
        """From ``cfg.network`` (``optimizer``, ``learning_rate``)."""
        return cls(network.optimizer, network.learning_rate)

    def init_state(self, params: dict) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {}
        if self.rule == "adagrad":
            for k, p in params.items():
                state[f"{k}.g2"] = np.full(p.shape, self.initial_accumulator, np.float32)
        elif self.rule == "adam":
            for k, p in params.items():
                state[f"{k}.m"] = np.zeros(p.shape, np.float32)
                state[f"{k}.v"] = np.zeros(p.shape, np.float32)
            state["step"] = np.zeros(1, np.float64)
        return state

    def apply(self, params: dict, grads: dict, state: dict) -> None:
        """One update of ``params`` (and ``state``) in place with ``grads`` (not modified)."""
        lr = self.learning_rate
        if self.rule == "adam":
            state["step"] += 1
            t = float(state["step"][0])
            c1 = 1.0 - self.beta1**t
            c2 = 1.0 - self.beta2**t
            step = lr * np.sqrt(c2) / c1
        for k, p in params.items():
            g = grads[k]
            if g.shape != p.shape:
                raise ValueError(f"dense gradient {k}: expected shape {p.shape}, got {g.shape}")
            if self.rule == "sgd":
                p -= lr * g
            elif self.rule == "adagrad":
                g2 = state[f"{k}.g2"]
                g2 += g * g
                p -= lr * g / (np.sqrt(g2) + self.epsilon)
            else:
                m, v = state[f"{k}.m"], state[f"{k}.v"]
                m *= self.beta1
                m += (1.0 - self.beta1) * g
                v *= self.beta2
                v += (1.0 - self.beta2) * (g * g)
                p -= (step * m / (np.sqrt(v) + self.epsilon * np.sqrt(c2))).astype(p.dtype, copy=False)
