import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from trainer.gendata import EDGE_IDS, generate_hour, generate_hours, raw_ids, true_weights
from trainer.hours import partition_relpath
from trainer.partition import assign_work, check_schema, is_complete, list_files, locate
from trainer.reader import BatchReader

H0 = 498805


@pytest.fixture
def demo_columns(make_columns):
    # the [columns] of examples/demo.toml
    return make_columns(slots=("user_id", "item_id", "category", "tags"), dense=("d0", "d1", "d2"))


def test_partitions_layout_idempotence_and_skip(tmp_path, demo_columns):
    out = generate_hours(demo_columns, str(tmp_path), H0, 3, 3000, seed=5, skip=[H0 + 1])
    assert [o["status"] for o in out] == ["written", "skipped", "written"]
    part = tmp_path / partition_relpath(H0)
    names = sorted(p.name for p in part.iterdir())
    assert names == ["_SUCCESS", "_bayes.json", "part-00000.parquet", "part-00001.parquet"]
    assert (part / "_SUCCESS").stat().st_size == 0
    assert not (tmp_path / partition_relpath(H0 + 1)).exists()
    assert pq.ParquetFile(part / "part-00000.parquet").metadata.num_row_groups >= 3
    bayes = json.loads((part / "_bayes.json").read_text())
    assert 0.6 < bayes["bayes_auc"] < 0.9 and 0.05 < bayes["true_ctr"] < 0.3 and bayes["rows"] == 3000
    mtime = (part / "part-00000.parquet").stat().st_mtime_ns
    again = generate_hours(demo_columns, str(tmp_path), H0, 1, 3000, seed=5)
    assert again[0]["status"] == "exists" and again[0]["bayes_auc"] == bayes["bayes_auc"]
    assert (part / "part-00000.parquet").stat().st_mtime_ns == mtime


def test_partial_partition_is_rewritten(tmp_path, demo_columns):
    part = tmp_path / partition_relpath(H0)
    part.mkdir(parents=True)
    (part / "part-00007.parquet").write_bytes(b"half a file")
    out = generate_hours(demo_columns, str(tmp_path), H0, 1, 500, seed=1)
    assert out[0]["status"] == "written" and not (part / "part-00007.parquet").exists()


def test_deterministic_in_seed_and_hour(demo_columns):
    a, ia = generate_hour(demo_columns, H0, 500, seed=3)
    b, ib = generate_hour(demo_columns, H0, 500, seed=3)
    c, _ = generate_hour(demo_columns, H0 + 1, 500, seed=3)
    assert a.equals(b) and ia == ib and not a.equals(c)


def test_reads_back_through_partition_and_reader(tmp_path, demo_columns):
    generate_hours(demo_columns, str(tmp_path), H0, 1, 2000, seed=2)
    part = locate(str(tmp_path), H0)
    assert is_complete(part)
    files, dense_dim = check_schema(part, list_files(part), demo_columns)
    assert dense_dim == 3 and sum(f.rows for f in files) == 2000
    reader = BatchReader(assign_work(files, 1)[0], demo_columns, 512)
    batches = list(reader)
    assert sum(b.num_rows for b in batches) == 2000 and reader.stats.bad_rows == 0
    assert reader.stats.dense_nulls > 0  # the last dense column has a few nulls
    keys = np.concatenate([b.keys for b in batches])
    edge = EDGE_IDS.view(np.uint64)
    assert all((keys == e).any() for e in edge)  # 0, -1, INT64_MIN, INT64_MAX all appear
    assert (keys >= np.uint64(2**63)).mean() > 0.2  # negative int64 ids are common
    tags = [b for b in batches]
    assert any(np.bincount(b.example[b.field == 3], minlength=b.num_rows).max() > 1 for b in tags)


def test_ids_drift_and_new_ids(demo_columns):
    t0, _ = generate_hour(demo_columns, H0, 4000, seed=9)
    t1, _ = generate_hour(demo_columns, H0 + 1, 4000, seed=9)
    i0, i1 = set(t0["item_id"].to_pylist()), set(t1["item_id"].to_pylist())
    stable = set(raw_ids(np.arange(50_000), 1, 9).tolist())
    assert len(i1 - stable) > 20 and not (i1 - stable) & (i0 - stable)  # fresh ids each hour
    w_now = true_weights(np.arange(100), 1, 9, H0, 1.0)
    w_later = true_weights(np.arange(100), 1, 9, H0 + 36, 1.0)
    assert 0 < np.abs(w_now - w_later).mean() < 0.6 and np.corrcoef(w_now, w_later)[0, 1] > 0.8
    assert np.array_equal(raw_ids(np.arange(4), 0, 1), EDGE_IDS)


def test_bad_arguments(tmp_path, demo_columns):
    with pytest.raises(ValueError, match="rows_per_hour"):
        generate_hours(demo_columns, str(tmp_path), H0, 1, 0, seed=1)
