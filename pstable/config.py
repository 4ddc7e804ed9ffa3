"""Configuration of one sparse table: optimizer rule, admission policy, decay and eviction.

Field names are the keys of ``[table]``, ``[table.optimizer]`` and ``[table.admission]`` in a model
config (``examples/demo.toml``; ``num_shards`` belongs to the trainer), so a loader can build them
with ``TableConfig(optimizer=OptimizerConfig(**opt), admission=AdmissionConfig(**adm), **table)``.
Every check raises :class:`TableConfigError` (a ``ValueError``) naming the key, the value and the
rule.

>>> cfg = TableConfig(dim=8, optimizer=OptimizerConfig(rule="adam"),
...                   admission=AdmissionConfig(policy="count_filter", count=2))
>>> cfg.optimizer.rule == "adam", opt_state_width("adam", 8)
(True, 20)
>>> TableConfig(dim=0)
Traceback (most recent call last):
...
pstable.config.TableConfigError: table.dim: must be an integer in [1, 4096], got 0
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field

__all__ = [
    "TableConfigError",
    "OptimizerRule",
    "AdmissionPolicy",
    "OptimizerConfig",
    "AdmissionConfig",
    "EvictionConfig",
    "TableConfig",
    "opt_state_width",
]


class TableConfigError(ValueError):
    """A table configuration value breaks a rule; the message names key, value and rule."""


class OptimizerRule(enum.StrEnum):
    """Per-row optimizer rule of the sparse table (Paddle's Sparse*SGDRule family)."""

    SGD = "sgd"          #: w -= lr * g; no state
    ADAGRAD = "adagrad"  #: Paddle SparseAdaGradSGDRule: one g2sum for w, one for the embedding
    ADAM = "adam"        #: Paddle SparseAdamSGDRule: per-element m, v; per-row beta1^t, beta2^t


class AdmissionPolicy(enum.StrEnum):
    """How an unseen feature is admitted (准入) into the table."""

    NONE = "none"                  #: always admitted on first push
    COUNT_FILTER = "count_filter"  #: once accumulated shows reach ``count``
    PROBABILITY = "probability"    #: if u(key, slot, seed, hour) < ``probability`` (one draw/hour)
    SHOW_CLICK = "show_click"      #: once the pending show/click score reaches ``threshold``


def opt_state_width(rule, dim: int) -> int:
    """Number of float32 optimizer-state values per row (the ``opt_state`` column width).

    ``sgd``: 0. ``adagrad``: 2 (g2sum of the 1-wide weight, g2sum of the embedding).
    ``adam``: ``2 * (1 + dim) + 2`` (m and v per element of weight+embedding, then beta1^t, beta2^t).

    >>> opt_state_width("sgd", 8), opt_state_width("adagrad", 8), opt_state_width("adam", 8)
    (0, 2, 20)
    """
    from pstable._table import rule_state_width  # the rules define it (pst_rules.h), once

    return rule_state_width(_enum("optimizer.rule", rule, OptimizerRule), int(dim))


# -- validation helpers: each names key, value and rule -------------------------------------------

def _enum(key, value, cls):
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise TableConfigError(f"{key}: must be one of {allowed}, got {value!r}") from None


def _number(key, value, lo=None, hi=None, lo_open=False, hi_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TableConfigError(f"{key}: must be a number, got {value!r}")
    v = float(value)
    lo_s = "" if lo is None else ("(" if lo_open else "[") + repr(lo)
    hi_s = "" if hi is None else repr(hi) + (")" if hi_open else "]")
    rule = f"in {lo_s or '(-inf'}, {hi_s or 'inf)'}"
    if not math.isfinite(v):
        raise TableConfigError(f"{key}: must be a finite number {rule}, got {value!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise TableConfigError(f"{key}: must be a number {rule}, got {value!r}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise TableConfigError(f"{key}: must be a number {rule}, got {value!r}")
    return v


def _integer(key, value, lo, hi) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise TableConfigError(f"{key}: must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def _set(obj, name, value):
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class OptimizerConfig:
    """Per-row optimizer of the sparse table (``[table.optimizer]``).

    ``show_scale`` (PaddlePaddle's ``enable_show_scale_gradient``): a push carries a feature's
    gradient summed over its occurrences in the batch; with ``show_scale`` every rule applies
    that sum divided by the feature's shows in the push (by 1 when they are below 1), so a
    frequent feature steps like one occurrence, not like their sum. ``False`` applies the sum
    (the table's behaviour before the switch existed).
    """

    rule: OptimizerRule = OptimizerRule.ADAGRAD  #: "sgd", "adagrad" or "adam"
    learning_rate: float = 0.05                  #: > 0
    initial_range: float = 0.01                  #: embeddings start uniform in [-r, r]; w at 0
    weight_bounds: float = 10.0                  #: every weight clipped to [-b, b]; > 0
    initial_g2sum: float = 3.0                   #: adagrad only; > 0
    beta1: float = 0.9                           #: adam only; in [0, 1)
    beta2: float = 0.999                         #: adam only; in [0, 1)
    epsilon: float = 1e-8                        #: adam only; > 0
    show_scale: bool = True                      #: divide a push's gradient by its shows (max 1)

    def __post_init__(self):
        p = "table.optimizer."
        _set(self, "rule", _enum(p + "rule", self.rule, OptimizerRule))
        _set(self, "learning_rate", _number(p + "learning_rate", self.learning_rate, 0.0, lo_open=True))
        _set(self, "initial_range", _number(p + "initial_range", self.initial_range, 0.0))
        _set(self, "weight_bounds", _number(p + "weight_bounds", self.weight_bounds, 0.0, lo_open=True))
        _set(self, "initial_g2sum", _number(p + "initial_g2sum", self.initial_g2sum, 0.0, lo_open=True))
        _set(self, "beta1", _number(p + "beta1", self.beta1, 0.0, 1.0, hi_open=True))
        _set(self, "beta2", _number(p + "beta2", self.beta2, 0.0, 1.0, hi_open=True))
        _set(self, "epsilon", _number(p + "epsilon", self.epsilon, 0.0, lo_open=True))
        if not isinstance(self.show_scale, bool):
            raise TableConfigError(f"{p}show_scale: must be true or false, got {self.show_scale!r}")
        if self.initial_range > self.weight_bounds:
            raise TableConfigError(
                f"table.optimizer.initial_range: must be <= weight_bounds ({self.weight_bounds!r}), "
                f"got {self.initial_range!r}")


@dataclass(frozen=True)
class AdmissionConfig:
    """Admission (准入) of unseen features (``[table.admission]``); unused keys are ignored."""

    policy: AdmissionPolicy = AdmissionPolicy.NONE  #: "none", "count_filter", "probability", "show_click"
    count: int = 1                                  #: count_filter: admitted once shows reach this (>= 1)
    probability: float = 1.0                        #: probability: chance per hour, in [0, 1]
    threshold: float = 0.0                          #: show_click: admitted once score >= this (>= 0)

    def __post_init__(self):
        p = "table.admission."
        _set(self, "policy", _enum(p + "policy", self.policy, AdmissionPolicy))
        _set(self, "count", _integer(p + "count", self.count, 1, 2**31 - 1))
        _set(self, "probability", _number(p + "probability", self.probability, 0.0, 1.0))
        _set(self, "threshold", _number(p + "threshold", self.threshold, 0.0))


@dataclass(frozen=True)
class EvictionConfig:
    """Day-boundary decay and eviction (淘汰): a read-only view of the flat ``[table]`` keys.

    Built by :attr:`TableConfig.eviction`; the model config keeps these keys in ``[table]``.
    """

    show_click_decay_rate: float = 0.98  #: show/click multiplied by this at each day boundary, (0, 1]
    delete_threshold: float = 0.0        #: evict rows whose score < this (0 = never by score)
    delete_after_unseen_days: int = 30   #: evict rows unseen more days than this (0 = never)


@dataclass(frozen=True)
class TableConfig:
    """One sparse table (``[table]`` minus ``num_shards``).

    ``optimizer`` and ``admission`` may also be given as dicts of their keys.
    """

    dim: int = 8                                                      #: embedding width, [1, 4096]
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    nonclk_coeff: float = 0.1             #: score = (show - click) * nonclk_coeff + click * click_coeff
    click_coeff: float = 1.0
    show_click_decay_rate: float = 0.98   #: show/click multiplied by this at each end_day, (0, 1]
    delete_threshold: float = 0.0         #: evict rows whose score < this (0 = never by score)
    delete_after_unseen_days: int = 30    #: evict rows unseen more whole days than this (0 = never)
    seed: int = 0                         #: initial values and admission draws depend on it, [0, 2^64)

    def __post_init__(self):
        for name, cls in (("optimizer", OptimizerConfig), ("admission", AdmissionConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                known = {f.name for f in dataclasses.fields(cls)}
                unknown = sorted(set(value) - known)
                if unknown:
                    raise TableConfigError(
                        f"table.{name}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
                _set(self, name, cls(**value))
            elif not isinstance(value, cls):
                raise TableConfigError(
                    f"table.{name}: must be a {cls.__name__} or a dict of its keys, got {value!r}")
        _set(self, "dim", _integer("table.dim", self.dim, 1, 4096))
        _set(self, "nonclk_coeff", _number("table.nonclk_coeff", self.nonclk_coeff))
        _set(self, "click_coeff", _number("table.click_coeff", self.click_coeff))
        _set(self, "show_click_decay_rate",
             _number("table.show_click_decay_rate", self.show_click_decay_rate, 0.0, 1.0, lo_open=True))
        _set(self, "delete_threshold", _number("table.delete_threshold", self.delete_threshold))
        _set(self, "delete_after_unseen_days",
             _integer("table.delete_after_unseen_days", self.delete_after_unseen_days, 0, 2**31 - 1))
        _set(self, "seed", _integer("table.seed", self.seed, 0, 2**64 - 1))

    @property
    def eviction(self) -> EvictionConfig:
        """The decay/eviction keys as one object."""
        return EvictionConfig(self.show_click_decay_rate, self.delete_threshold,
                              self.delete_after_unseen_days)

    @property
    def opt_state_width(self) -> int:
        """Width ``k`` of the ``opt_state`` column for this rule and dim."""
        return opt_state_width(self.optimizer.rule, self.dim)

    @property
    def row_width(self) -> int:
        """Width of the ``weights`` column: 1-wide weight plus the embedding (``1 + dim``)."""
        return 1 + self.dim

    def to_dict(self) -> dict:
        """Plain dict of the keys (enums as strings), the inverse of ``TableConfig(**d)``."""
        d = dataclasses.asdict(self)
        d["optimizer"]["rule"] = str(self.optimizer.rule)
        d["admission"]["policy"] = str(self.admission.policy)
        return d
