"""The synthetic hourly click stream behind ``streamtrain gen-data`` (a planted model to recover).

Every hour ``h`` gets ``rows_per_hour`` rows drawn from a fixed, seeded generative model:

- **Sparse slots** (by position in ``columns.slots``; extra slots reuse the profiles in turn):
  0 = "user" (1,000,000 ids, Zipf 1.05), 1 = "item" (50,000 ids, Zipf 1.1),
  2 = "category" (500 ids, Zipf 0.9), 3 = "tags", a **list<int64>** column of 0-4 ids (50,000 ids,
  Zipf 1.1; some empty lists and some nulls). Draws are Zipf-distributed ranks over the id space;
  a few percent of each hour's draws are **new ids** that first appear in that hour. A rank maps to
  a raw int64 id through a 64-bit mix, so ids cover the whole 64-bit range (negative ids
  included); ranks 0-3 (the most popular) are exactly ``0, -1, INT64_MIN, INT64_MAX``.
- **Dense** columns ``N(0, 1)`` (float32); the last one has ~0.5 % nulls.
- **Planted logit** = bias + sum over the row's features of a true weight (a deterministic function
  of ``(seed, slot, id)`` that drifts slowly with the hour: a sine of period 3 days with an
  id-dependent phase) + a linear term on the dense columns + one interaction ``d0 * d1``.
- **Planted structure** (:class:`Planted`, off by default: the default stream does not change):
  *pairwise interactions* ``strength * <u_a, u_b>`` between the latent factors of two slots' ids
  (``factors`` wide, fixed per id; a list slot's factor is the sum over its ids), which no model
  that adds per-id weights or per-slot sums can express but a factorization machine can; and a
  *sequence effect*: a history list slot (0..``history_len`` ids drawn like the target slot's,
  with the same raw ids, so a shared table makes them the same rows; no weights of its own, newest
  last) adds ``strength * max_h <u_h, u_target>`` (centred per history length): the click follows
  the history id that best matches the target, which target attention can find and a sum over
  the history blurs.
- **Label** ~ Bernoulli(sigmoid(planted logit)).

Each partition gets 2 Parquet files of several row groups, a ``_bayes.json`` (``bayes_auc``: the AUC
of the true probabilities on the drawn labels, ``true_ctr``, ``bayes_logloss``), then the empty
``_SUCCESS`` marker, written last. An already complete partition is left alone (idempotent); a
partial one (no ``_SUCCESS``) is rewritten. Data files are written under a ``.``-prefixed name and
renamed, so a crash never leaves a half file that looks like data.

With the default profile and ~50k rows/hour, the Bayes AUC is about 0.78 and the CTR about 0.17;
most of the signal sits in ids popular enough (item, category, tags, dense) to be learned in a few
hours.

>>> from types import SimpleNamespace as NS
>>> import tempfile
>>> cols = NS(label="label", show="", slots=("user_id", "item_id", "category", "tags"), dense=("d0", "d1", "d2"))
>>> with tempfile.TemporaryDirectory() as root:
...     out = generate_hours(cols, root, start_hour=498805, hours=1, rows_per_hour=2000, seed=1)
...     again = generate_hours(cols, root, start_hour=498805, hours=1, rows_per_hour=2000, seed=1)
>>> out[0]["status"], again[0]["status"], out[0]["rows"]
('written', 'exists', 2000)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainer.hours import hour_str, partition_relpath
from trainer.metrics import exact_auc
from scipy.special import expit as sigmoid  # stable logistic (scipy comes with jax)
from trainer.partition import SUCCESS, open_root
from trainer.sharding import mix64

__all__ = ["SlotProfile", "DEFAULT_PROFILES", "EDGE_IDS", "Planted", "raw_ids", "true_weights",
           "latent_factors", "generate_hour", "generate_hours", "DEFAULT_BIAS"]

#: Raw ids of ranks 0..3 of every slot (the most popular ids): the 64-bit edge values.
EDGE_IDS = np.array([0, -1, np.iinfo(np.int64).min, np.iinfo(np.int64).max], np.int64)


@dataclass(frozen=True)
class SlotProfile:
    """How one sparse slot is drawn."""

    id_space: int  #: stable ids (ranks 0..id_space-1)
    zipf: float  #: Zipf exponent of the rank distribution
    sigma: float  #: std of the true weights
    new_fraction: float = 0.03  #: share of draws that are ids new this hour
    new_per_hour: int = 2000  #: new ids introduced per hour
    max_len: int = 0  #: 0 = scalar column; else list<int64> of 0..max_len ids
    null_fraction: float = 0.0  #: share of null cells


DEFAULT_PROFILES = (
    SlotProfile(id_space=300_000, zipf=1.1, sigma=0.25),  # user
    SlotProfile(id_space=20_000, zipf=1.2, sigma=0.5),  # item
    SlotProfile(id_space=500, zipf=0.9, sigma=0.5, new_fraction=0.0),  # category
    SlotProfile(id_space=20_000, zipf=1.2, sigma=0.3, max_len=4, null_fraction=0.02),  # tags
)
_DENSE_BETA = (0.6, -0.4, 0.3)  # extra dense columns reuse these in turn
_INTERACTION = 0.4  # coefficient of d0 * d1
DEFAULT_BIAS = -2.2  #: planted intercept (CTR ~0.15); about -6.3 gives a CTR of ~0.4 %
_DRIFT = 0.4  # drift amplitude, as a fraction of a weight's sigma
_PERIOD_HOURS = 72.0
NEW_ID_BASE = 1 << 40  #: ranks of new ids start here (far from the stable ranks)
_FACTOR_SALT = 100  # `what` salts of the latent factors start here (2 per factor column)


@dataclass(frozen=True)
class Planted:
    """Structure planted on top of the default logit (none by default).

    Attributes
    ----------
    interactions : tuple of (str, str, float)
        ``(slot_a, slot_b, strength)``: the logit gains ``strength * <u_a, u_b>``.
    sequence : (str, str, float) or None
        ``(history_slot, target_slot, strength)``: the history slot's column is redrawn as a list of
        target-slot ids, and the logit gains ``strength * max_h <u_h, u_target>`` (0 for an empty
        history), less its mean over the hour's rows of the same history length.
    factors : int
        Width of the latent factors ``u`` (unit-variance dot products).
    history_len : int
        A history list holds 0..history_len ids (uniform).
    """

    interactions: tuple = ()
    sequence: tuple | None = None
    factors: int = 4
    history_len: int = 10

    def check(self, columns) -> None:
        """Refuse slots that are not columns of ``columns.slots``, naming the option."""
        slots = tuple(columns.slots)
        named = [("interaction", s) for a, b, _ in self.interactions for s in (a, b)]
        if self.sequence is not None:
            history, target, _ = self.sequence
            named += [("sequence history", history), ("sequence target", target)]
            if history == target:
                raise ValueError(f"sequence: the history slot must differ from the target, got {history!r}")
            if any(history in (a, b) for a, b, _ in self.interactions):
                raise ValueError(f"interaction: {history!r} is the sequence's history slot")
        for what, slot in named:
            if slot not in slots:
                raise ValueError(f"{what}: {slot!r} is not one of columns.slots ({', '.join(slots)})")
        if self.factors < 1 or self.history_len < 1:
            raise ValueError(f"factors and history_len must be >= 1, got {self.factors}, {self.history_len}")

    @staticmethod
    def term(text: str) -> tuple[str, str, float]:
        """Parse ``"slot_a:slot_b:strength"`` (the command line's form of a planted term).

        >>> Planted.term("item_id:category:1.5")
        ('item_id', 'category', 1.5)
        """
        parts = text.split(":")
        try:
            if len(parts) != 3 or not parts[0] or not parts[1]:
                raise ValueError
            return parts[0], parts[1], float(parts[2])
        except ValueError:
            raise ValueError(f"expected SLOT:SLOT:STRENGTH, got {text!r}") from None

    @property
    def factor_slots(self) -> set:
        """Slots whose rows need their latent factor."""
        need = {s for a, b, _ in self.interactions for s in (a, b)}
        return need | ({self.sequence[1]} if self.sequence else set())


def _seed_salt(seed: int, what: int) -> np.ndarray:
    return mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64), np.array([what], np.int32))


def _unit(idx: np.ndarray, slot: int, seed: int, what: int) -> np.ndarray:
    """Deterministic uniforms in (0, 1) of (seed, slot, rank, what)."""
    salt = _seed_salt(seed, what)
    z = mix64(idx.astype(np.uint64) ^ salt, np.full(idx.shape, slot, np.int32))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def raw_ids(ranks: np.ndarray, slot: int, seed: int) -> np.ndarray:
    """Raw int64 id of each rank of ``slot`` (ranks 0-3 are :data:`EDGE_IDS`)."""
    ranks = np.asarray(ranks, np.int64)
    ids = mix64(ranks.astype(np.uint64) ^ _seed_salt(seed, 1), np.full(ranks.shape, slot, np.int32)).view(np.int64)
    edge = ranks < len(EDGE_IDS)
    ids[edge] = EDGE_IDS[ranks[edge]]
    return ids


def true_weights(ranks: np.ndarray, slot: int, seed: int, hour: int, sigma: float) -> np.ndarray:
    """The planted weight of ids (given by rank) of ``slot`` at data hour ``hour``."""
    ranks = np.asarray(ranks, np.int64)
    u1, u2, u3 = (_unit(ranks, slot, seed, w) for w in (2, 3, 4))
    normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    drift = _DRIFT * np.sin(2.0 * np.pi * (hour / _PERIOD_HOURS + u3))
    return sigma * (normal + drift)


def latent_factors(ranks: np.ndarray, slot: int, seed: int, factors: int) -> np.ndarray:
    """The planted latent factor ``[n, factors]`` of ids (by rank) of ``slot``: fixed (no drift),
    Gaussian with variance ``factors ** -0.5`` per column, so the dot product of two has variance 1."""
    ranks = np.asarray(ranks, np.int64)
    out = np.empty((ranks.shape[0], factors))
    for j in range(factors):
        u1, u2 = (_unit(ranks, slot, seed, _FACTOR_SALT + 2 * j + w) for w in (0, 1))
        out[:, j] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return out * factors ** -0.25


def _zipf_ranks(rng: np.random.Generator, n: int, space: int, a: float) -> np.ndarray:
    """Bounded Zipf(a) ranks in [0, space) by inverse CDF of the continuous approximation."""
    u = rng.random(n)
    if abs(a - 1.0) < 1e-9:
        r = np.exp(u * np.log(space + 1.0))
    else:
        r = ((np.power(space + 1.0, 1.0 - a) - 1.0) * u + 1.0) ** (1.0 / (1.0 - a))
    return np.minimum(r.astype(np.int64) - 1, space - 1).clip(0)


def _draw_ranks(rng, n, prof: SlotProfile, hour: int) -> np.ndarray:
    ranks = _zipf_ranks(rng, n, prof.id_space, prof.zipf)
    if prof.new_fraction > 0:
        new = rng.random(n) < prof.new_fraction
        ranks[new] = NEW_ID_BASE + hour * prof.new_per_hour + rng.integers(0, prof.new_per_hour, int(new.sum()))
    return ranks


def generate_hour(columns, hour: int, rows: int, seed: int, profiles=DEFAULT_PROFILES,
                  planted: Planted = Planted(), bias: float = DEFAULT_BIAS):
    """Draw one hour of data (``planted``: extra structure, see :class:`Planted`; ``bias``: the
    planted logit's intercept, lower = rarer clicks).

    Returns
    -------
    table : pyarrow.Table
        Columns ``columns.label`` (int64 0/1), ``columns.show`` if configured (int64, all 1), the slot
        columns (int64, or list<int64>) and the dense columns (float32).
    info : dict
        ``bayes_auc``, ``true_ctr`` (mean true probability), ``actual_ctr``, ``bayes_logloss``,
        ``rows``.
    """
    planted.check(columns)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(hour) & 0xFFFFFFFF, 0x6E7])
    logit = np.full(rows, float(bias))
    arrays: dict[str, pa.Array] = {}
    factors: dict[str, np.ndarray] = {}  # slot -> [rows, k]: the row's latent factor (sum over a list)
    history = planted.sequence[0] if planted.sequence else None
    for s, name in enumerate(columns.slots):
        prof = profiles[s % len(profiles)]
        if name == history:
            continue  # drawn below, from the target slot's ids
        if prof.max_len:
            lengths = rng.integers(0, prof.max_len + 1, rows)
            ranks = _draw_ranks(rng, int(lengths.sum()), prof, hour)
            owner = np.repeat(np.arange(rows), lengths)
            per_row = np.bincount(owner, weights=true_weights(ranks, s, seed, hour, prof.sigma), minlength=rows)
            offsets = np.zeros(rows + 1, np.int32)
            np.cumsum(lengths, out=offsets[1:])
            null = rng.random(rows) < prof.null_fraction
            logit += np.where(null, 0.0, per_row)  # a null list carries no feature
            if name in planted.factor_slots:
                u = latent_factors(ranks, s, seed, planted.factors)
                sums = np.stack([np.bincount(owner, weights=c, minlength=rows) for c in u.T], axis=1)
                factors[name] = sums * ~null[:, None]
            arrays[name] = pa.ListArray.from_arrays(
                pa.array(offsets), pa.array(raw_ids(ranks, s, seed), pa.int64()),
                mask=pa.array(null) if null.any() else None)
        else:
            ranks = _draw_ranks(rng, rows, prof, hour)
            null = rng.random(rows) < prof.null_fraction
            logit += np.where(null, 0.0, true_weights(ranks, s, seed, hour, prof.sigma))
            if name in planted.factor_slots:
                factors[name] = latent_factors(ranks, s, seed, planted.factors) * ~null[:, None]
            arrays[name] = pa.array(raw_ids(ranks, s, seed), pa.int64(), mask=null if null.any() else None)
    for a, b, strength in planted.interactions:
        logit += strength * np.sum(factors[a] * factors[b], axis=1)
    if history is not None:
        target = planted.sequence[1]
        t = list(columns.slots).index(target)
        arrays[history], effect = _history(rows, hour, seed, t, profiles[t % len(profiles)],
                                           factors[target], planted)
        logit += effect
    dense = rng.standard_normal((rows, len(columns.dense))).astype(np.float32)
    for j, name in enumerate(columns.dense):
        null = (rng.random(rows) < 0.005) if j == len(columns.dense) - 1 else np.zeros(rows, bool)
        dense[null, j] = 0.0  # the planted model sees what the reader fills a null with by default
        logit += _DENSE_BETA[j % len(_DENSE_BETA)] * dense[:, j]
        arrays[name] = pa.array(dense[:, j], pa.float32(), mask=null if null.any() else None)
    if len(columns.dense) >= 2:
        logit += _INTERACTION * dense[:, 0].astype(np.float64) * dense[:, 1]
    p = sigmoid(logit)
    labels = (rng.random(rows) < p).astype(np.int64)
    cols = {columns.label: pa.array(labels, pa.int64())}
    if getattr(columns, "show", ""):
        cols[columns.show] = pa.array(np.ones(rows, np.int64))
    cols.update((name, arrays[name]) for name in (*columns.slots, *columns.dense))
    pc_ = np.clip(p, 1e-7, 1 - 1e-7)
    info = {
        "rows": int(rows),
        "bayes_auc": exact_auc(labels, p),
        "true_ctr": float(p.mean()),
        "actual_ctr": float(labels.mean()),
        "bayes_logloss": float(-(labels * np.log(pc_) + (1 - labels) * np.log1p(-pc_)).mean()),
    }
    return pa.table(cols), info


def _history(rows: int, hour: int, seed: int, target: int, prof: SlotProfile, target_factor, planted):
    """The history column (lists of ids of slot ``target``, drawn as its ids are) and its planted
    effect, ``strength * max_h <u_h, u_target>`` per row (0 for an empty history)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(hour) & 0xFFFFFFFF, 0x5E9])
    lengths = rng.integers(0, planted.history_len + 1, rows)
    ranks = _draw_ranks(rng, int(lengths.sum()), prof, hour)
    owner = np.repeat(np.arange(rows), lengths)
    match = np.sum(latent_factors(ranks, target, seed, planted.factors) * target_factor[owner], axis=1)
    best = np.full(rows, -np.inf)
    np.maximum.at(best, owner, match)
    best[lengths == 0] = 0.0
    # centred per history length: a longer history holds a better best match, and a model would
    # otherwise learn "long history = click" from the per-id weights alone; this also keeps the
    # CTR near the default stream's
    per_length = np.bincount(lengths, weights=best) / np.maximum(np.bincount(lengths), 1)
    best -= per_length[lengths]
    offsets = np.zeros(rows + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(raw_ids(ranks, target, seed), pa.int64()))
    return column, planted.sequence[2] * best


def generate_hours(cfg_or_columns, data_root: str, start_hour: int, hours: int, rows_per_hour: int,
                   seed: int, skip=(), *, files_per_hour: int = 2, row_groups_per_file: int = 4,
                   planted: Planted = Planted(), bias: float = DEFAULT_BIAS):
    """Write ``hours`` hourly partitions starting at hour index ``start_hour``.

    Parameters
    ----------
    cfg_or_columns : ModelConfig or ColumnsConfig
        The column names (``cfg.columns``) to write; a config also gives its ``[s3]`` settings.
    data_root : str
        Local path or pyarrow URI.
    start_hour, hours : int
        Hour index of the first partition and how many.
    rows_per_hour : int
    seed : int
        The planted model and the draws are a function of ``(seed, hour)`` only.
    skip : iterable of int
        Hour indexes not to write (to simulate an hour that never lands).
    files_per_hour, row_groups_per_file : int
    planted : Planted
        Interactions and a sequence effect to plant (none by default).
    bias : float
        The planted logit's intercept (:data:`DEFAULT_BIAS`); part of what the draws depend on.

    Returns
    -------
    list of dict
        Per hour: ``hour``, ``hour_str``, ``path``, ``status`` (``"written"``, ``"exists"`` or
        ``"skipped"``) and, when written or already there, the ``_bayes.json`` content.
    """
    columns = getattr(cfg_or_columns, "columns", cfg_or_columns)
    planted.check(columns)
    if rows_per_hour < 1 or hours < 0 or files_per_hour < 1 or row_groups_per_file < 1:
        raise ValueError("generate_hours: rows_per_hour, files_per_hour, row_groups_per_file must be >= 1 "
                         f"and hours >= 0; got {rows_per_hour}, {files_per_hour}, {row_groups_per_file}, {hours}")
    fs, base = open_root(data_root, getattr(cfg_or_columns, "s3", None))
    skip = {int(h) for h in skip}
    out = []
    for h in range(int(start_hour), int(start_hour) + int(hours)):
        path = f"{base}/{partition_relpath(h)}"
        rec = {"hour": h, "hour_str": hour_str(h), "path": path}
        if h in skip:
            out.append({**rec, "status": "skipped"})
            continue
        if fs.get_file_info(f"{path}/{SUCCESS}").type == pafs.FileType.File:
            info = {}
            if fs.get_file_info(f"{path}/_bayes.json").type == pafs.FileType.File:
                with fs.open_input_stream(f"{path}/_bayes.json") as f:
                    info = json.loads(f.read().decode())
            out.append({**rec, "status": "exists", **info})
            continue
        table, info = generate_hour(columns, h, rows_per_hour, seed, planted=planted, bias=bias)
        fs.create_dir(path, recursive=True)
        for fi in fs.get_file_info(pafs.FileSelector(path)):  # leftovers of a crashed run
            if fi.type == pafs.FileType.File:
                fs.delete_file(fi.path)
        bounds = np.linspace(0, rows_per_hour, files_per_hour + 1).astype(int)
        for i in range(files_per_hour):
            part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
            rg = max(1, -(-part.num_rows // row_groups_per_file))
            tmp, final = f"{path}/.part-{i:05d}.parquet.tmp", f"{path}/part-{i:05d}.parquet"
            pq.write_table(part, tmp, filesystem=fs, row_group_size=rg)
            fs.move(tmp, final)
        info = {"hour": h, "hour_str": hour_str(h), "seed": int(seed), "bias": float(bias), **info}
        with fs.open_output_stream(f"{path}/_bayes.json") as f:
            f.write(json.dumps(info, sort_keys=True).encode())
        with fs.open_output_stream(f"{path}/{SUCCESS}"):
            pass
        out.append({**rec, "status": "written", **info})
    return out
