"""Corruption, missing / duplicated / out-of-order versions, wrong parents: detected and named."""
import json
import shutil

import pytest

from tests.store.store_helpers import H0, commit, make_cols, snapshot
from trainer.store import (ChainError, ChainOrderError, CorruptFileError, DuplicateVersionError, LedgerError,
                           MissingFileError, MissingVersionError, load_chain, mark_missing,
                           read_state)
from trainer.store.layout import StoreLayout
from trainer.store.verify import verify_store


@pytest.fixture
def chain3(tmp_path):
    commit(tmp_path, H0, "full", None, make_cols(200, seed=1))
    commit(tmp_path, H0 + 1, "delta", "v000001", make_cols(50, seed=2))
    commit(tmp_path, H0 + 2, "delta", "v000002", make_cols(50, seed=3))
    return tmp_path


def _ledger(d):
    return [json.loads(x) for x in (d / "ledger.jsonl").read_text().splitlines()]


def _write_ledger(d, events):
    (d / "ledger.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def _flip(p):
    b = bytearray(p.read_bytes())
    b[len(b) // 3] ^= 0x01
    p.write_bytes(bytes(b))


def test_corrupt_shard_named_on_read_and_verify(chain3):
    before = snapshot(chain3)
    _flip(chain3 / "versions/v000002/shard-00001.parquet")
    ch = load_chain(chain3)  # sizes fine: found when read
    with pytest.raises(CorruptFileError, match=r"version v000002 .*shard-00001.parquet checksum"):
        ch.read_shard("v000002", 1)
    ch.read_shard("v000002", 0)
    with pytest.raises(CorruptFileError, match="v000002"):
        load_chain(chain3, verify=True)
    with pytest.raises(CorruptFileError, match="v000002"):
        verify_store(chain3)
    assert snapshot(chain3) == before


def test_truncated_file_found_at_load(chain3):
    p = chain3 / "versions/v000003/dense.npz"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(CorruptFileError, match=r"version v000003.*dense.npz has \d+ bytes"):
        load_chain(chain3)


def test_missing_file(chain3):
    (chain3 / "versions/v000001/shard-00003.parquet").unlink()
    with pytest.raises(MissingFileError, match="v000001.*shard-00003.parquet"):
        load_chain(chain3)


def test_tampered_meta_json(chain3):
    p = chain3 / "versions/v000002/meta.json"
    meta = json.loads(p.read_bytes())
    meta["metrics"]["auc"] = 0.99
    p.write_text(json.dumps(meta))
    with pytest.raises(CorruptFileError, match="v000002.*sha256 differs from the ledger"):
        load_chain(chain3)


def test_missing_version_folder(chain3):
    shutil.rmtree(chain3 / "versions/v000002")
    with pytest.raises(MissingVersionError, match="v000002"):
        load_chain(chain3)
    # loading a head before the gap still works, the gap is never skipped
    assert load_chain(chain3, head="v000001").head == "v000001"


def test_version_missing_from_ledger_is_named(chain3):
    ev = _ledger(chain3)
    del ev[1]  # v000002's line lost
    for i, e in enumerate(ev, 1):
        e["seq"] = i
    _write_ledger(chain3, ev)
    with pytest.raises(ChainOrderError, match="v000003 has parent v000002 but the head was v000001"):
        load_chain(chain3)


def test_duplicated_version_line(chain3):
    ev = _ledger(chain3)
    dup = dict(ev[2], seq=4)
    _write_ledger(chain3, ev + [dup])
    with pytest.raises(DuplicateVersionError, match="v000003 committed twice"):
        load_chain(chain3)


def test_duplicated_hour(chain3):
    ev = _ledger(chain3)
    extra = dict(ev[2], seq=4, version="v000004", parent="v000003")
    _write_ledger(chain3, ev + [extra])
    with pytest.raises(DuplicateVersionError, match="v000004 commits hour .* already committed as v000003"):
        load_chain(chain3)


def test_out_of_order_delta(chain3):
    ev = _ledger(chain3)
    ev[1], ev[2] = ev[2], ev[1]
    for i, e in enumerate(ev, 1):
        e["seq"] = i
    _write_ledger(chain3, ev)
    with pytest.raises(ChainOrderError, match="v000003"):
        load_chain(chain3)


def test_wrong_parent_in_meta(chain3):
    """meta.json and ledger agree with each other only if nobody swapped a folder."""
    shutil.rmtree(chain3 / "versions/v000003")
    shutil.copytree(chain3 / "versions/v000002", chain3 / "versions/v000003")
    with pytest.raises(ChainError, match="v000003"):
        load_chain(chain3)



def test_seq_gap(chain3):
    ev = _ledger(chain3)
    ev[2]["seq"] = 5
    _write_ledger(chain3, ev)
    with pytest.raises(LedgerError, match="seq 5 where 3 was expected"):
        load_chain(chain3)


def test_garbage_line(chain3):
    with open(chain3 / "ledger.jsonl", "ab") as f:
        f.write(b"not json\n")
    with pytest.raises(LedgerError, match="line 4 is not JSON"):
        read_state(StoreLayout(chain3))


def test_torn_last_line_ignored_then_cut(chain3):
    with open(chain3 / "ledger.jsonl", "ab") as f:
        f.write(b'{"seq": 4, "event": "comm')
    assert load_chain(chain3).head == "v000003"
    mark_missing(chain3, H0 + 5, "late")
    ev = _ledger(chain3)
    assert [e["seq"] for e in ev] == [1, 2, 3, 4] and ev[-1]["event"] == "missing"


def test_chain_command_lists_every_version_and_marks_the_bad_one(chain3):
    """``streamtrain chain`` without --verify: every version listed, the bad one marked, exit 1."""
    from tests.support import streamtrain, write_model_config

    config = write_model_config(chain3 / "cfg")
    config.write_text(config.read_text().replace(f'model_dir = "{chain3 / "cfg"}/model"',
                                                 f'model_dir = "{chain3}"'))
    (chain3 / "versions/v000002/meta.json").unlink()
    listing = streamtrain("chain", "--config", str(config))
    assert listing.returncode == 1
    rows = [line for line in listing.stdout.splitlines() if line.startswith("v0")]
    assert [r.split()[0] for r in rows] == ["v000001", "v000002", "v000003"]
    assert "BAD: " in rows[1] and "meta.json" in rows[1]
    assert "BAD" not in rows[0] + rows[2]
    assert listing.stderr.splitlines() == ["streamtrain: error: 1 bad version(s): v000002"]
