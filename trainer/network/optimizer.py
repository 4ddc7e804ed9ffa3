"""The dense optimizer rules the servers apply to their slice of the flat dense vector (numpy).

The rules are elementwise, so a server holding any contiguous slice of the vector updates it
exactly as one process holding the whole vector would.
"""
from __future__ import annotations

import numpy as np

__all__ = ["DenseOptimizer"]


class DenseOptimizer:
    """Dense optimizer rule: ``sgd``, ``adagrad`` or ``adam``; state is a flat ``dict`` of arrays.

    The rule is elementwise, so it works as well on a dict of named parameters as on
    ``{"all": flat_vector}`` (what an MPI server holding a slice of the flat vector uses).

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
