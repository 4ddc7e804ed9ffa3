"""Progressive-validation metrics of one hour: AUC, log loss, calibration (COPC, reliability).

Every batch is scored *before* the model learns from it; the worker feeds those predictions here.
Each worker keeps one :class:`ProgressiveMetrics`; the hour's numbers are the merge of all of
them, never an average of per-worker AUCs.

Cross-rank reduction (declared beside the state): :meth:`ProgressiveMetrics.state` is one flat
``float64`` vector whose every entry is a *sum*, so ``comm.Reduce(state, total, op=MPI.SUM)`` then
:meth:`ProgressiveMetrics.from_state` gives exactly the merged metrics.

Exact and approximate
---------------------
- ``rows``, ``shows``, ``clicks``, ``pred_ctr``, ``actual_ctr``, ``logloss``, ``mse``: exact sums (in
  float64) over the rows seen, each row weighted by its show. ``logloss`` clips predictions to
  ``[1e-7, 1 - 1e-7]``.
- ``auc``: from fixed-bucket histograms of positive and negative weight over ``[0, 1]``
  (``num_buckets`` equal buckets, default ``2**16``; a pair inside one bucket counts as half).
  It equals the exact AUC (ties counted half) except for pairs of a positive and a negative
  whose predictions fall in the same bucket but differ; hence
  ``|auc - exact_auc| <= sum_b pos_b * neg_b / (2 * P * N)``, which :meth:`get` reports as
  ``auc_error_bound`` (0 when no bucket holds both labels).
- ``copc`` (actual clicks / predicted clicks) and ``reliability``: exact. The reliability summary
  (:class:`Reliability`) sums shows, predictions and clicks in fixed bins of the predicted CTR
  (:data:`RELIABILITY_EDGES`), so it merges across ranks by the same ``SUM``.

>>> m = ProgressiveMetrics(num_buckets=1024)
>>> m.update(np.array([0, 1, 0, 1]), np.array([0.1, 0.8, 0.3, 0.6]))
>>> r = m.get()
>>> r["auc"], r["rows"], r["actual_ctr"]
(1.0, 4.0, 0.5)
"""

from __future__ import annotations

import numpy as np

__all__ = ["ProgressiveMetrics", "Reliability", "RELIABILITY_EDGES", "exact_auc"]

_SCALARS = ("rows", "shows", "clicks", "pred_sum", "loss_sum", "sq_err_sum")
_EPS = 1e-7

#: Edges of the reliability bins of predicted CTR: finer near 0, where click rates live, and
#: symmetric around 0.5, so a rare-click stream (CTR 0.4 %) and a rating stream (55 % positive)
#: both spread over several bins.
RELIABILITY_EDGES = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
_RELIABILITY_BINS = len(RELIABILITY_EDGES) - 1


class Reliability:
    """Predicted vs actual CTR in fixed bins of the predicted CTR (a reliability diagram).

    Exact and mergeable: per bin the state holds the sums of shows, of show-weighted predictions
    and of clicks (``3 * 10`` float64); reduce across ranks with ``SUM``. The bin of a
    prediction ``p`` is the ``i`` with ``RELIABILITY_EDGES[i] <= p < RELIABILITY_EDGES[i + 1]``
    (``p = 1`` falls in the last bin).

    Parameters
    ----------
    state : ndarray of float64, shape (30,), optional
        Storage to use (a view into :class:`ProgressiveMetrics`' state vector); a new zeroed
        array by default.

    >>> r = Reliability()
    >>> r.update(np.array([0, 1, 1]), np.array([0.2, 0.25, 0.95]))
    >>> got = r.get()
    >>> got["shows"][5], got["actual_ctr"][5], got["pred_ctr"][9], got["pred_ctr"][0]
    (2.0, 0.5, 0.95, None)
    """

    edges = RELIABILITY_EDGES
    size = 3 * _RELIABILITY_BINS

    def __init__(self, state: np.ndarray | None = None):
        if state is None:
            state = np.zeros(self.size, np.float64)
        if state.shape != (self.size,) or state.dtype != np.float64:
            raise ValueError(f"reliability state: expected float64 shape ({self.size},), "
                             f"got {state.dtype} {state.shape}")
        self._state = state

    def update(self, labels, preds, shows=None) -> None:
        """Add a batch (probabilities already checked by the caller; ``shows`` default 1)."""
        y = np.asarray(labels, np.float64).ravel()
        p = np.asarray(preds, np.float64).ravel()
        w = np.ones_like(y) if shows is None else np.asarray(shows, np.float64).ravel()
        b = np.clip(np.searchsorted(self.edges, p, side="right") - 1, 0, _RELIABILITY_BINS - 1)
        s = self._state.reshape(3, _RELIABILITY_BINS)
        s[0] += np.bincount(b, weights=w, minlength=_RELIABILITY_BINS)
        s[1] += np.bincount(b, weights=w * p, minlength=_RELIABILITY_BINS)
        s[2] += np.bincount(b, weights=w * y, minlength=_RELIABILITY_BINS)

    def merge(self, other: "Reliability") -> "Reliability":
        """Add ``other``'s sums into this one; returns ``self``."""
        self._state += other._state
        return self

    def get(self) -> dict:
        """``edges`` (11), per bin ``shows``, ``pred_ctr``, ``actual_ctr`` (10 each; the rates
        are ``None`` for an empty bin: JSON ``null``, never NaN), and ``ece``: the expected
        calibration error ``sum_i shows_i * |pred_i - actual_i| / sum_i shows_i`` (``None``
        before any row)."""
        shows, pred, clicks = (self._state.reshape(3, _RELIABILITY_BINS)[i] for i in range(3))
        rate = lambda num: [float(n / d) if d > 0 else None for n, d in zip(num, shows)]  # noqa: E731
        total = float(shows.sum())
        ece = float(np.abs(pred - clicks).sum() / total) if total > 0 else None
        return {"edges": list(self.edges), "shows": [float(v) for v in shows],
                "pred_ctr": rate(pred), "actual_ctr": rate(clicks), "ece": ece}


class ProgressiveMetrics:
    """Mergeable hour metrics (see the module docstring for what is exact).

    Parameters
    ----------
    num_buckets : int
        AUC histogram buckets over ``[0, 1]`` (default ``2**16``: the state is
        ``2 * 2**16 + 6 + 30`` float64 = 1 MiB).
    """

    _TAIL = len(_SCALARS) + Reliability.size  # state entries after the two histograms

    def __init__(self, num_buckets: int = 1 << 16):
        if int(num_buckets) < 1:
            raise ValueError(f"num_buckets: expected >= 1, got {num_buckets}")
        self.num_buckets = int(num_buckets)
        self._state = np.zeros(2 * self.num_buckets + self._TAIL, np.float64)
        self._reliability = Reliability(self._state[2 * self.num_buckets + len(_SCALARS):])

    # views into the one state vector
    @property
    def _pos(self) -> np.ndarray:
        return self._state[: self.num_buckets]

    @property
    def _neg(self) -> np.ndarray:
        return self._state[self.num_buckets : 2 * self.num_buckets]

    @property
    def _scalars(self) -> np.ndarray:
        return self._state[2 * self.num_buckets : 2 * self.num_buckets + len(_SCALARS)]

    def update(self, labels, preds, shows=None) -> None:
        """Add a batch of progressive predictions.

        Parameters
        ----------
        labels : array of 0/1, shape (n,)
        preds : array of float in [0, 1], shape (n,)
            Predictions made before learning from these rows.
        shows : array, shape (n,), optional
            Row weights (impressions); default 1 each.
        """
        y = np.asarray(labels, np.float64).ravel()
        p = np.asarray(preds, np.float64).ravel()
        if y.shape != p.shape:
            raise ValueError(f"labels {y.shape} and preds {p.shape} differ in shape")
        if y.size == 0:
            return
        if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
            raise ValueError("preds: expected finite probabilities in [0, 1]")
        w = np.ones_like(y) if shows is None else np.asarray(shows, np.float64).ravel()
        if w.shape != y.shape:
            raise ValueError(f"shows {w.shape} and labels {y.shape} differ in shape")
        b = np.minimum((p * self.num_buckets).astype(np.int64), self.num_buckets - 1)
        wy = w * y
        self._pos[:] += np.bincount(b, weights=wy, minlength=self.num_buckets)
        self._neg[:] += np.bincount(b, weights=w - wy, minlength=self.num_buckets)
        pc = np.clip(p, _EPS, 1 - _EPS)
        loss = -(y * np.log(pc) + (1 - y) * np.log1p(-pc))
        s = self._scalars
        s[0] += y.size
        s[1] += w.sum()
        s[2] += wy.sum()
        s[3] += (w * p).sum()
        s[4] += (w * loss).sum()
        s[5] += (w * (p - y) ** 2).sum()
        self._reliability.update(y, p, w)

    def merge(self, other: "ProgressiveMetrics") -> "ProgressiveMetrics":
        """Add ``other``'s counts into this one (same ``num_buckets``); returns ``self``."""
        if other.num_buckets != self.num_buckets:
            raise ValueError(f"cannot merge metrics with {other.num_buckets} buckets into {self.num_buckets}")
        self._state += other._state
        return self

    def reset(self) -> None:
        self._state[:] = 0

    def state(self) -> np.ndarray:
        """The flat float64 state vector (a copy). Reduce across ranks with ``SUM``."""
        return self._state.copy()

    @classmethod
    def from_state(cls, state) -> "ProgressiveMetrics":
        """Rebuild from :meth:`state` (or a SUM of several)."""
        state = np.asarray(state, np.float64)
        n = state.size - cls._TAIL
        if state.ndim != 1 or n < 2 or n % 2:
            raise ValueError(f"metrics state: expected 2 * num_buckets + {cls._TAIL} float64, "
                             f"got shape {state.shape}")
        m = cls(n // 2)
        m._state[:] = state
        return m

    def auc(self) -> tuple[float, float]:
        """``(auc, error_bound)``; ``nan`` AUC when only one label was seen."""
        pos, neg = self._pos, self._neg
        P, N = pos.sum(), neg.sum()
        if P <= 0 or N <= 0:
            return float("nan"), 0.0
        neg_below = np.cumsum(neg) - neg
        num = float(np.dot(pos, neg_below) + 0.5 * np.dot(pos, neg))
        bound = float(0.5 * np.dot(pos, neg) / (P * N))
        return float(num / (P * N)), bound

    def get(self) -> dict[str, float]:
        """The metrics as plain floats.

        Keys: ``auc``, ``auc_error_bound``, ``logloss``, ``pred_ctr``, ``actual_ctr``, ``copc``
        (actual / predicted CTR), ``mse``, ``rows``, ``shows``, ``clicks``, and ``reliability``
        (:meth:`Reliability.get`). Ratios are ``nan`` before any row.
        """
        rows, shows, clicks, pred_sum, loss_sum, sq = (float(v) for v in self._scalars)
        auc, bound = self.auc()
        nan = float("nan")
        return {
            "auc": auc,
            "auc_error_bound": bound,
            "logloss": loss_sum / shows if shows > 0 else nan,
            "pred_ctr": pred_sum / shows if shows > 0 else nan,
            "actual_ctr": clicks / shows if shows > 0 else nan,
            "copc": clicks / pred_sum if pred_sum > 0 else nan,
            "mse": sq / shows if shows > 0 else nan,
            "rows": rows,
            "shows": shows,
            "clicks": clicks,
            "reliability": self._reliability.get(),
        }


def exact_auc(labels, preds, weights=None) -> float:
    """Sorting-based exact (weighted) AUC, ties counted as half. ``nan`` with one label only.

    The reference :class:`ProgressiveMetrics` is tested against; also used by ``gen-data`` for
    the Bayes AUC.

    >>> exact_auc([0, 1, 1, 0], [0.2, 0.2, 0.9, 0.1])
    0.875
    """
    y = np.asarray(labels, np.float64).ravel()
    p = np.asarray(preds, np.float64).ravel()
    w = np.ones_like(y) if weights is None else np.asarray(weights, np.float64).ravel()
    order = np.argsort(p, kind="stable")
    p, y, w = p[order], y[order], w[order]
    # group equal predictions
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    pos = np.add.reduceat(w * y, starts) if p.size else np.zeros(0)
    neg = np.add.reduceat(w * (1 - y), starts) if p.size else np.zeros(0)
    P, N = pos.sum(), neg.sum()
    if P <= 0 or N <= 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((np.dot(pos, neg_below) + 0.5 * np.dot(pos, neg)) / (P * N))
