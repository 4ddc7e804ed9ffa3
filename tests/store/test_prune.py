"""prune --keep-bases N: removes old versions, records it, never what a load still needs."""
import pytest

from tests.store.store_helpers import H0, commit, make_cols
from trainer.store import (MissingVersionError, StoreError, load_chain, plan_hour, prune,
                           read_state, rollback_head)
from trainer.store.layout import StoreLayout


def _day(d, day, parent, n_deltas=2):
    v = commit(d, H0 + 24 * day, "full", parent, make_cols(30, seed=day)).version
    for i in range(1, n_deltas + 1):
        v = commit(d, H0 + 24 * day + i, "delta", v, make_cols(10, seed=100 * day + i)).version
    return v


def test_prune_keeps_newest_bases(tmp_path):
    head = None
    for day in range(3):
        head = _day(tmp_path, day, head)  # v1..v3, v4..v6, v7..v9
    assert prune(tmp_path, keep_bases=2, dry_run=True) == ["v000001", "v000002", "v000003"]
    gone = prune(tmp_path, keep_bases=2)
    assert gone == ["v000001", "v000002", "v000003"]
    assert not (tmp_path / "versions/v000001").exists()
    st = read_state(StoreLayout(tmp_path))
    assert st.events[-1]["event"] == "prune" and st.events[-1]["versions"] == gone
    assert [v.version for v in load_chain(tmp_path, verify=True).versions] == [
        "v000007", "v000008", "v000009"]
    with pytest.raises(MissingVersionError, match=r"v000002 is pruned \(ledger seq 10\)"):
        load_chain(tmp_path, head="v000002")
    assert prune(tmp_path, keep_bases=2) == []


def test_prune_keeps_chain_of_heads_parent(tmp_path):
    """keep_bases=1 right after a base: the previous chain stays so the base can be rolled back."""
    head = _day(tmp_path, 0, None)  # v1 v2 v3
    head = _day(tmp_path, 1, head, n_deltas=0)  # v4 full, parent v3
    assert prune(tmp_path, keep_bases=1) == []
    p = plan_hour(tmp_path, H0 + 24, force=True)
    assert p.rollback == "v000004" and p.parent == "v000003"
    rollback_head(tmp_path, "v000004")
    assert load_chain(tmp_path, verify=True).head == "v000003"


def test_prune_after_a_delta(tmp_path):
    head = _day(tmp_path, 0, None)
    head = _day(tmp_path, 1, head, n_deltas=1)  # v4 full, v5 delta
    assert prune(tmp_path, keep_bases=1) == ["v000001", "v000002", "v000003"]
    assert load_chain(tmp_path, verify=True).base == "v000004"


def test_interrupted_prune_is_cleaned_by_save(tmp_path):
    head = _day(tmp_path, 0, None)
    head = _day(tmp_path, 1, head, n_deltas=1)

    def hook(step):
        raise RuntimeError(step)
    with pytest.raises(RuntimeError):
        prune(tmp_path, keep_bases=1, hook=hook)
    assert (tmp_path / "versions/v000001").exists()  # ledger says pruned: invisible already
    assert load_chain(tmp_path).base == "v000004"
    commit(tmp_path, H0 + 24 + 2, "delta", head, make_cols(5))
    assert not (tmp_path / "versions/v000001").exists()


def test_keep_bases_must_be_positive(tmp_path):
    with pytest.raises(StoreError, match="keep_bases must be >= 1"):
        prune(tmp_path, keep_bases=0)


def test_a_pruned_hour_is_never_trained_again(tmp_path):
    head = None
    for day in range(3):
        head = _day(tmp_path, day, head)
    prune(tmp_path, keep_bases=2)
    plan = plan_hour(tmp_path, H0 + 1)  # trained in v000002, since pruned
    assert plan.skip and "already trained in v000002 (since pruned)" in plan.message
    with pytest.raises(StoreError, match="since pruned: only the head can be retrained"):
        plan_hour(tmp_path, H0 + 1, force=True)
    assert read_state(StoreLayout(tmp_path)).pruned_hours[H0 + 1].version == "v000002"
