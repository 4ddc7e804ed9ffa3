"""Bad input is refused with a ValueError naming what is wrong, and the table is unchanged."""

import numpy as np
import pytest

from pstable import (AdmissionConfig, OptimizerConfig, SparseTable, TableConfig, TableConfigError,
                     opt_state_width)
from tests.pstable.pstable_cases import make_config


def _snapshot(t):
    return ({k: v.tobytes() for k, v in t.export().items()},
            {k: v.tobytes() for k, v in t.export(changed_only=True).items()},
            t.counters(), len(t), t.num_pending)


@pytest.fixture
def table():
    t = SparseTable(make_config("adam", "count_filter", dim=3))
    n = 20
    t.push(np.arange(n, dtype=np.uint64), np.zeros(n, np.int32), np.full(n, 3, np.float32),
           np.zeros(n, np.float32), np.ones((n, 4), np.float32), 1)
    t.push(np.arange(100, 105, dtype=np.uint64), np.zeros(5, np.int32), np.ones(5, np.float32),
           np.zeros(5, np.float32), np.ones((5, 4), np.float32), 1)
    return t


def good(n=4, W=4):
    return dict(keys=np.arange(n, dtype=np.uint64), slots=np.zeros(n, np.int32),
                shows=np.ones(n, np.float32), clicks=np.zeros(n, np.float32),
                grads=np.ones((n, W), np.float32), hour=2)


BAD_PUSH = {
    "keys int32": (dict(keys=np.arange(4, dtype=np.int32)), r"keys: expected dtype uint64.*got int32"),
    "keys list": (dict(keys=[0, 1, 2, 3]), r"keys: expected a numpy array"),
    "keys 2-D": (dict(keys=np.zeros((4, 1), np.uint64)), r"keys: expected a 1-D array"),
    "keys strided": (dict(keys=np.arange(8, dtype=np.uint64)[::2]), r"keys: expected a C-contiguous"),
    "slots int64": (dict(slots=np.zeros(4, np.int64)), r"slots: expected dtype int32, got int64"),
    "slots short": (dict(slots=np.zeros(3, np.int32)), r"slots: expected shape \(4,\).*got \(3,\)"),
    "shows float64": (dict(shows=np.ones(4)), r"shows: expected dtype float32, got float64"),
    "shows strided": (dict(shows=np.ones(8, np.float32)[::2]), r"shows: expected a C-contiguous"),
    "shows negative": (dict(shows=np.array([1, -1, 1, 1], np.float32)), r"shows: expected finite values >= 0.*index 1"),
    "clicks nan": (dict(clicks=np.array([0, 0, np.nan, 0], np.float32)), r"clicks: expected finite.*index 2"),
    "grads wrong dim": (dict(grads=np.ones((4, 9), np.float32)), r"grads: expected shape \(4, 4\).*got \(4, 9\)"),
    "grads fortran": (dict(grads=np.asfortranarray(np.ones((4, 4), np.float32))), r"grads: expected a C-contiguous"),
    "grads nan": (dict(grads=np.where(np.eye(4, dtype=bool), np.nan, 1).astype(np.float32)),
                  r"grads: expected finite values, got nan at row 0, column 0"),
    "grads inf": (dict(grads=np.array([[1, 1, 1, 1]] * 3 + [[1, 1, np.inf, 1]], np.float32)),
                  r"grads: expected finite values, got inf at row 3, column 2"),
    "hour float": (dict(hour=2.5), r"hour: expected an integer"),
    "hour too big": (dict(hour=2**40), r"hour: expected an int32"),
}


@pytest.mark.parametrize("change,match", BAD_PUSH.values(), ids=list(BAD_PUSH))
def test_bad_push_names_the_problem_and_changes_nothing(table, change, match):
    before = _snapshot(table)
    with pytest.raises(ValueError, match=match):
        table.push(**{**good(), **change})
    assert _snapshot(table) == before


@pytest.mark.parametrize("kw,match", [
    (dict(keys=np.arange(3, dtype=np.float64)), r"keys: expected dtype uint64"),
    (dict(keys=np.arange(3, dtype=np.uint64), slots=np.zeros(2, np.int32)), r"slots: expected shape \(3,\)"),
    (dict(keys=np.arange(3, dtype=np.uint64), out=np.zeros((3, 5), np.float32)), r"out: expected shape \(3, 4\)"),
    (dict(keys=np.arange(3, dtype=np.uint64), out=np.zeros((3, 4), np.float64)), r"out: expected dtype float32"),
])
def test_bad_pull(table, kw, match):
    before = _snapshot(table)
    with pytest.raises(ValueError, match=match):
        table.pull(**kw)
    assert _snapshot(table) == before


def test_pull_into_out():
    t = SparseTable(make_config("sgd", "none", dim=3))
    out = np.full((2, 4), 7, np.float32)
    assert t.pull(np.arange(2, dtype=np.uint64), out=out) is out
    assert not out.any()


def _cols(t):
    return {k: v.copy() for k, v in t.export().items()}


BAD_LOAD = {
    "missing": (lambda c: c.pop("opt_state"), r"missing column\(s\) \['opt_state'\]"),
    "key dtype": (lambda c: c.__setitem__("key", c["key"].astype(np.float64)), r"key: expected dtype uint64"),
    "slot dtype": (lambda c: c.__setitem__("slot", c["slot"].astype(np.int64)), r"slot: expected dtype int32, got int64"),
    "state value": (lambda c: c["state"].__setitem__(3, 7), r"state: expected 0 \(row\), 1 \(pending\) or 2.*got 7 at row 3"),
    "dim": (lambda c: c.__setitem__("weights", np.zeros((len(c["key"]), 9), np.float32)),
            r"weights: expected shape \(\d+, 4\) \(1 \+ dim = 4 columns: this table has dim 3\), got \(\d+, 9\)"),
    "width": (lambda c: c.__setitem__("opt_state", np.zeros((len(c["key"]), 2), np.float32)),
              r"opt_state: expected shape \(\d+, 10\) \(rule adam with dim 3 keeps 10 values"),
    "length": (lambda c: c.__setitem__("show", c["show"][:-1].copy()), r"show: expected shape \(\d+,\)"),
    "nan": (lambda c: c["weights"].__setitem__((2, 1), np.nan), r"weights: expected finite values.*row 2"),
}


@pytest.mark.parametrize("spoil,match", BAD_LOAD.values(), ids=list(BAD_LOAD))
def test_bad_load_names_the_mismatch_and_changes_nothing(table, spoil, match):
    cols = _cols(table)
    spoil(cols)
    target = SparseTable(table.config)
    target.push(np.array([555], np.uint64), None, np.full(1, 5, np.float32), np.zeros(1, np.float32),
                np.zeros((1, 4), np.float32), 0)
    before = _snapshot(target)
    with pytest.raises(ValueError, match=match):
        target.load(cols)
    assert _snapshot(target) == before


CONFIG_ERRORS = [
    (lambda: TableConfig(dim=0), r"table\.dim: must be an integer in \[1, 4096\], got 0"),
    (lambda: TableConfig(dim=True), r"table\.dim"),
    (lambda: OptimizerConfig(rule="rmsprop"), r"table\.optimizer\.rule: must be one of 'sgd', 'adagrad', 'adam', got 'rmsprop'"),
    (lambda: OptimizerConfig(learning_rate=0), r"table\.optimizer\.learning_rate: must be a number in \(0\.0, inf\), got 0"),
    (lambda: OptimizerConfig(beta1=1.0), r"table\.optimizer\.beta1: .*\[0\.0, 1\.0\).*got 1\.0"),
    (lambda: OptimizerConfig(initial_range=20.0), r"table\.optimizer\.initial_range: must be <= weight_bounds"),
    (lambda: AdmissionConfig(policy="lottery"), r"table\.admission\.policy: must be one of"),
    (lambda: AdmissionConfig(count=0), r"table\.admission\.count: must be an integer in \[1, "),
    (lambda: AdmissionConfig(probability=1.5), r"table\.admission\.probability: .*got 1\.5"),
    (lambda: TableConfig(show_click_decay_rate=0.0), r"table\.show_click_decay_rate: .*\(0\.0, 1\.0\]"),
    (lambda: TableConfig(delete_after_unseen_days=-1), r"table\.delete_after_unseen_days: must be an integer in \[0, "),
    (lambda: TableConfig(seed=-1), r"table\.seed: must be an integer in \[0, 18446744073709551615\], got -1"),
    (lambda: TableConfig(nonclk_coeff=float("nan")), r"table\.nonclk_coeff: must be a finite number"),
    (lambda: TableConfig(optimizer=dict(rule="sgd", momentum=0.9)), r"table\.optimizer\.momentum: unknown key"),
    (lambda: TableConfig(admission="none"), r"table\.admission: must be a AdmissionConfig or a dict"),
]


@pytest.mark.parametrize("make,match", CONFIG_ERRORS)
def test_config_errors_name_key_value_and_rule(make, match):
    with pytest.raises(TableConfigError, match=match):
        make()
    assert issubclass(TableConfigError, ValueError)


def test_config_from_toml_keys_and_back():
    import tomllib
    from pathlib import Path
    raw = tomllib.loads((Path(__file__).parents[2] / "examples" / "demo.toml").read_text())["table"]
    raw.pop("num_shards")
    cfg = TableConfig(optimizer=OptimizerConfig(**raw.pop("optimizer")),
                      admission=AdmissionConfig(**raw.pop("admission")), **raw)
    assert cfg.optimizer.rule == "adagrad" and cfg.admission.count == 2 and cfg.seed == 2026
    assert TableConfig(**cfg.to_dict()) == cfg
    assert cfg.eviction.delete_after_unseen_days == 30
    assert cfg.opt_state_width == opt_state_width("adagrad", 8) == 2
    SparseTable(cfg)


def test_table_rejects_a_non_config():
    with pytest.raises(ValueError, match="config: expected a pstable.TableConfig"):
        SparseTable(42)


@pytest.mark.parametrize("dim", [1, 2, 3, 8])
def test_bad_value_found_in_the_merge_of_any_width_and_the_next_push_is_clean(dim):
    """A NaN anywhere (here on a duplicate key of a push that restarts its merge: the first
    push sized the merge for one key, this one has thousands) is refused with nothing changed,
    and the next push merges as on a fresh table."""
    cfg = TableConfig(dim=dim, optimizer={"rule": "adagrad"})
    t, fresh = SparseTable(cfg), SparseTable(cfg)
    for tab in (t, fresh):
        tab.push(np.array([1], np.uint64), None, np.ones(1, np.float32), np.zeros(1, np.float32),
                 np.zeros((1, dim + 1), np.float32), 1)
    n = 5000
    keys = (np.arange(n) % 3000).astype(np.uint64)
    grads = np.full((n, dim + 1), 0.5, np.float32)
    grads[4000, dim] = np.nan                      # key 1000, seen before: a merge add
    shows = np.full(n, -0.0, np.float32)           # -0.0 counts as non-negative
    before = _snapshot(t)
    with pytest.raises(ValueError, match=rf"grads: expected finite values, got nan at row 4000, column {dim}"):
        t.push(keys, None, shows, np.zeros(n, np.float32), grads, 2)
    assert _snapshot(t) == before
    grads[4000, dim] = 0.5
    assert t.push(keys, None, shows, np.zeros(n, np.float32), grads, 2) == \
        fresh.push(keys, None, shows, np.zeros(n, np.float32), grads, 2)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(t.export().values(), fresh.export().values()))
