"""save / mark_missing / rollback / plan / donefile, and crash injection between every step."""
import json
import os
from pathlib import Path

import pytest

from tests.store.store_helpers import (H0, assert_cols_equal, chain_rows, commit, make_cols,
                           snapshot, split_shards, stage)
from trainer.store import (RollbackError, StagedVersionError, StoreError, load_chain,
                           mark_missing, plan_hour, publish, read_donefile, read_state,
                           rollback_head, save)
from trainer.store.layout import StoreLayout

STEPS = ["start", "cleaned", "verified", "renamed", "synced", "ledger_partial", "committed",
         "published"]


class Crash(RuntimeError):
    pass


def crash_at(step):
    def hook(s):
        if s == step:
            raise Crash(s)
    return hook


@pytest.fixture
def two_versions(tmp_path):
    commit(tmp_path, H0, "full", None, make_cols(200, seed=1))
    commit(tmp_path, H0 + 1, "delta", "v000001", make_cols(50, seed=2))
    return tmp_path


def _content(model_dir):
    ch, rows = chain_rows(model_dir, verify=True)
    return [v.version for v in ch.versions], rows


@pytest.mark.parametrize("step", STEPS)
def test_crash_between_every_step_then_save_again(two_versions, step):
    d = two_versions
    before_snap = snapshot(d)
    before_versions, before_rows = _content(d)
    new = make_cols(60, seed=3)
    stage(d, H0 + 2, "delta", "v000002", new)
    with pytest.raises(Crash):
        save(d, H0 + 2, kind="delta", hook=crash_at(step))
    committed = STEPS.index(step) >= STEPS.index("committed")
    if not committed:
        assert snapshot(d) == before_snap
        versions, rows = _content(d)
        assert versions == before_versions
        for a, b in zip(rows, before_rows):
            for x, y in zip(a, b):
                assert_cols_equal(x, y)
        assert "v000003" not in {ln["version"] for ln in read_donefile(d)}
    res = save(d, H0 + 2, kind="delta")
    assert res.version == "v000003"
    assert res.status == {"renamed": "completed", "synced": "completed",
                          "ledger_partial": "completed", "committed": "already_committed",
                          "published": "already_committed"}.get(step, "committed")
    versions, rows = _content(d)
    assert versions == ["v000001", "v000002", "v000003"]
    for got, want in zip(rows[2], split_shards(new)):
        assert_cols_equal(got, want)
    assert [ln["version"] for ln in read_donefile(d)].count("v000003") == 1
    assert not any(p.name.startswith(".") for p in (d / "versions").iterdir())


@pytest.mark.parametrize("step", ["verified", "renamed", "ledger_partial", "committed"])
def test_killed_process_between_steps(two_versions, step):
    """Same as above with a real process death (no finally blocks, no flushing)."""
    d = two_versions
    before = snapshot(d)
    stage(d, H0 + 2, "delta", "v000002", make_cols(30, seed=4))
    pid = os.fork()
    if pid == 0:  # child: die at the step
        def hook(s):
            if s == step:
                os._exit(17)
        try:
            save(d, H0 + 2, hook=hook)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 17
    if step != "committed":
        assert snapshot(d) == before
    assert save(d, H0 + 2).version == "v000003"
    assert load_chain(d, verify=True).head == "v000003"


def test_already_committed_is_a_noop(two_versions):
    d = two_versions
    ledger = (d / "ledger.jsonl").read_bytes()
    res = save(d, H0 + 1)
    assert res.status == "already_committed" and res.version == "v000002"
    assert "already in the chain" in res.message
    assert (d / "ledger.jsonl").read_bytes() == ledger


def test_nothing_staged(two_versions):
    with pytest.raises(StagedVersionError, match="nothing staged"):
        save(two_versions, H0 + 5)


def test_wrong_parent_refused_chain_unchanged(two_versions):
    d = two_versions
    stage(d, H0 + 2, "delta", "v000001", make_cols(10, seed=5))  # staged on an old head
    before = snapshot(d)
    with pytest.raises(StagedVersionError, match="parent v000001 != current head v000002"):
        save(d, H0 + 2)
    assert snapshot(d) == before


def test_kind_mismatch_refused(two_versions):
    stage(two_versions, H0 + 2, "delta", "v000002", make_cols(10, seed=5))
    with pytest.raises(StagedVersionError, match="kind delta but full was asked"):
        save(two_versions, H0 + 2, kind="full")


def test_corrupt_staged_file_refused(two_versions):
    d = two_versions
    sdir = stage(d, H0 + 2, "delta", "v000002", make_cols(40, seed=6))
    p = sdir / "shard-00002.parquet"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))
    before = snapshot(d)
    with pytest.raises(StagedVersionError, match="shard-00002.parquet checksum"):
        save(d, H0 + 2)
    assert snapshot(d) == before


def test_orphan_of_other_hour_is_cleaned(two_versions):
    d = two_versions
    stage(d, H0 + 2, "delta", "v000002", make_cols(10, seed=7))
    with pytest.raises(Crash):
        save(d, H0 + 2, hook=crash_at("synced"))
    assert (d / "versions/v000003").is_dir()
    # the operator gives up on H0+2 (never retried) and H0+3 arrives
    stage(d, H0 + 3, "delta", "v000002", make_cols(10, seed=8))
    res = save(d, H0 + 3)
    assert res.version == "v000003" and res.hour == H0 + 3
    assert load_chain(d, verify=True).versions[-1].hour == H0 + 3


def test_missing_hour_records(two_versions):
    d = two_versions
    ev = mark_missing(d, H0 + 2, "sensor timeout after 7200 s")
    assert ev["event"] == "missing" and ev["seq"] == 3
    st = read_state(StoreLayout(d))
    assert [m["hour"] for m in st.missing] == [H0 + 2]
    with pytest.raises(StoreError, match="is committed as v000002"):
        mark_missing(d, H0 + 1, "x")
    # the chain goes on from the newest model
    p = plan_hour(d, H0 + 3)
    assert (p.action, p.kind, p.parent) == ("train", "delta", "v000002")
    # and a missing hour that lands late is appended (training order)
    commit(d, H0 + 3, "delta", "v000002", make_cols(5, seed=9))
    commit(d, H0 + 2, "delta", "v000003", make_cols(5, seed=10))
    assert [v.hour for v in load_chain(d).versions] == [H0, H0 + 1, H0 + 3, H0 + 2]


def test_plan_kinds_and_skip(tmp_path):
    d = tmp_path
    p = plan_hour(d, H0 + 5, full_save_hour=0)
    assert (p.action, p.kind, p.parent, p.version) == ("train", "full", None, "v000001")
    commit(d, H0 + 5, "full", None, make_cols(10))
    p = plan_hour(d, H0 + 6, full_save_hour=0)
    assert (p.kind, p.parent, p.version) == ("delta", "v000001", "v000002")
    p = plan_hour(d, H0 + 24 + 3, full_save_hour=3)
    assert p.kind == "full" and p.parent == "v000001"
    p = plan_hour(d, H0 + 5)
    assert p.skip and p.committed_as == "v000001"
    assert "already in chain as v000001, nothing to do" in p.message


def test_plan_partition_changed(tmp_path):
    part = {"path": "/data/dt=x/hour=00", "files": [{"name": "a.parquet", "bytes": 10, "sha256": "aa"}]}
    commit(tmp_path, H0, "full", None, make_cols(10), partition=part)
    same = plan_hour(tmp_path, H0, partition=json.loads(json.dumps(part)))
    assert same.skip and same.partition_changed is False
    other = {"path": part["path"], "files": [{"name": "a.parquet", "bytes": 11, "sha256": "ab"},
                                             {"name": "b.parquet", "bytes": 1, "sha256": "x"}]}
    p = plan_hour(tmp_path, H0, partition=other)
    assert p.skip and p.partition_changed
    assert "added b.parquet" in p.partition_diff and "partition changed" in p.message


def test_force_rollback_only_at_head(two_versions):
    d = two_versions
    with pytest.raises(RollbackError, match="head is v000002"):
        plan_hour(d, H0, force=True)
    p = plan_hour(d, H0 + 1, force=True)
    assert (p.action, p.rollback, p.parent, p.kind, p.version) == (
        "train", "v000002", "v000001", "delta", "v000003")
    with pytest.raises(RollbackError):
        rollback_head(d, "v000001")
    rollback_head(d, p.rollback, reason="force retrain")
    assert not (d / "versions/v000002").exists()
    assert load_chain(d).head == "v000001"
    assert plan_hour(d, H0 + 1).action == "train"
    res = commit(d, H0 + 1, "delta", "v000001", make_cols(20, seed=11))
    assert res.version == "v000003"  # numbers are never reused
    assert [v.version for v in load_chain(d, verify=True).versions] == ["v000001", "v000003"]


@pytest.mark.parametrize("step", ["rolled_back", "fell_back"])
def test_interrupted_rollback_leaves_orphan_cleaned_by_save(two_versions, step):
    d = two_versions
    with pytest.raises(Crash):
        rollback_head(d, "v000002", hook=crash_at(step))
    assert (d / "versions/v000002").is_dir()
    assert load_chain(d).head == "v000001"
    commit(d, H0 + 1, "delta", "v000001", make_cols(5))
    assert not (d / "versions/v000002").exists()
    # the donefile fell back to v000001 exactly once (by the rollback or by the save)
    assert [ln["version"] for ln in read_donefile(d)] == ["v000001", "v000002", "v000001", "v000003"]


def test_donefile_idempotent(two_versions):
    d = two_versions
    lines = read_donefile(d)
    assert [ln["version"] for ln in lines] == ["v000001", "v000002"]
    assert lines[1]["kind"] == "delta" and lines[1]["metrics"]["auc"] == 0.7
    assert lines[1]["path"].endswith("versions/v000002")
    assert publish(d, "v000002") is False
    assert len(read_donefile(d)) == 2
    with pytest.raises(StoreError, match="v000009"):
        publish(d, "v000009")
    # a torn last line (crash mid-append) is ignored and replaced
    with open(d / "donefile", "ab") as f:
        f.write(b'{"version": "v0000')
    assert len(read_donefile(d)) == 2
    rollback_head(d, "v000002")
    commit(d, H0 + 1, "delta", "v000001", make_cols(5))
    lines = read_donefile(d)
    assert [ln["version"] for ln in lines] == ["v000001", "v000002", "v000001", "v000003"]


def test_rolled_back_version_is_replaced_in_the_donefile_by_the_head(two_versions):
    d = two_versions
    rollback_head(d, "v000002", reason="force retrain")
    lines = read_donefile(d)
    assert [ln["version"] for ln in lines] == ["v000001", "v000002", "v000001"]
    assert lines[-1]["after_rollback"] == "v000002" and "after_rollback" not in lines[0]
    assert Path(lines[-1]["path"]).is_dir() and not Path(lines[1]["path"]).exists()
    assert lines[-1]["hour"] == lines[0]["hour"] and lines[-1]["metrics"] == lines[0]["metrics"]
    # saving again does not append it twice; an unpublished head rolled back adds nothing
    stage(d, H0 + 1, "delta", "v000001", make_cols(5))
    assert save(d, H0 + 1, kind="delta", publish=False).version == "v000003"
    rollback_head(d, "v000003")
    assert len(read_donefile(d)) == 3
