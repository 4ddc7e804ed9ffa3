"""Progressive-validation metrics of one hour: AUC, log loss, predicted vs actual CTR.

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

>>> m = ProgressiveMetrics(num_buckets=1024)
>>> m.update(np.array([0, 1, 0, 1]), np.array([0.1, 0.8, 0.3, 0.6]))
>>> r = m.get()
>>> r["auc"], r["rows"], r["actual_ctr"]
(1.0, 4.0, 0.5)
"""

from __future__ import annotations

import numpy as np

__all__ = ["ProgressiveMetrics", "exact_auc"]

_SCALARS = ("rows", "shows", "clicks", "pred_sum", "loss_sum", "sq_err_sum")
_EPS = 1e-7


class ProgressiveMetrics:
    """Mergeable hour metrics (see the module docstring for what is exact).

    Parameters
    ----------
    num_buckets : int
        AUC histogram buckets over ``[0, 1]`` (default ``2**16``: the state is ``2 * 2**16 + 6``
        float64 = 1 MiB).
    """

    def __init__(self, num_buckets: int = 1 << 16):
        if int(num_buckets) < 1:
            raise ValueError(f"num_buckets: expected >= 1, got {num_buckets}")
        self.num_buckets = int(num_buckets)
        self._state = np.zeros(2 * self.num_buckets + len(_SCALARS), np.float64)

    # views into the one state vector
    @property
    def _pos(self) -> np.ndarray:
        return self._state[: self.num_buckets]

    @property
    def _neg(self) -> np.ndarray:
        return self._state[self.num_buckets : 2 * self.num_buckets]

    @property
    def _scalars(self) -> np.ndarray:
        return self._state[2 * self.num_buckets :]

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
        n = state.size - len(_SCALARS)
        if state.ndim != 1 or n < 2 or n % 2:
            raise ValueError(f"metrics state: expected 2 * num_buckets + {len(_SCALARS)} float64, got shape {state.shape}")
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
        (actual / predicted CTR), ``mse``, ``rows``, ``shows``, ``clicks``. Ratios are ``nan`` before
        any row.
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
