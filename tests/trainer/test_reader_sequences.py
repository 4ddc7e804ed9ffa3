"""Sequence slots in the reader: ``[columns] sequences = {slot = max_len}`` is fed unpooled."""
import numpy as np
import pyarrow as pa
import pytest

from trainer.partition import SchemaError, assign_work, check_schema, list_files, locate
from trainer.reader import BadRowError, BatchReader, dedup

HOUR = 498805
I64 = np.iinfo(np.int64)

HISTORY = [[1, 2, 3, 4, 5], [], None, [7, None, 8], [9], [10, 11, 12, None, 13, 14], [I64.min, -1, 0]]


def _read(tmp_path, cols, batch_size, workers=1):
    part = locate(str(tmp_path), HOUR)
    files, _ = check_schema(part, list_files(part, checksums=False), cols)
    readers = [BatchReader(units, cols, batch_size) for units in assign_work(files, workers)]
    return readers, [list(r) for r in readers]


def _sequence_keys(batch, name):
    """Per row of ``batch``: the keys the sequence index points at, padding left out."""
    index = batch.sequences[name]
    return [[int(batch.keys[i].view(np.int64)) for i in row if i >= 0] for row in index]


def _table(history=HISTORY):
    n = len(history)
    return pa.table({"label": pa.array([i % 2 for i in range(n)], pa.int64()),
                     "item": pa.array([100 + i for i in range(n)], pa.int64()),
                     "history": pa.array(history, pa.list_(pa.int64())),
                     "tags": pa.array([[i] for i in range(n)], pa.list_(pa.int64()))})


def test_keeps_the_newest_ids_in_list_order_and_counts_the_truncated(tmp_path, make_columns, write_partition):
    write_partition(tmp_path, {"a.parquet": _table()})
    cols = make_columns(slots=("item", "history", "tags"), sequences={"history": 3})
    (reader,), ((batch,),) = _read(tmp_path, cols, 100)
    assert batch.sequences["history"].dtype == np.int64 and batch.sequences["history"].shape == (7, 3)
    assert _sequence_keys(batch, "history") == [[3, 4, 5], [], [], [7, 8], [9], [12, 13, 14],
                                                [I64.min, -1, 0]]
    # kept ids from position 0, then padding
    assert batch.sequences["history"][3].tolist()[2] == -1 and batch.sequences["history"][1].tolist() == [-1] * 3
    assert reader.stats.truncated_ids == 2 + 2  # [1, 2] and [10, 11] (nulls are not ids)
    assert reader.stats.as_dict()["truncated_ids"] == 4
    # truncated ids are not occurrences: 7 items + 12 kept history ids + 7 tags
    assert batch.num_features == 7 + 12 + 7 and not np.isin([1, 2, 10, 11], batch.keys[batch.field == -1]).any()


def test_fields_index_the_pooled_slots_and_sequence_ids_have_none(tmp_path, make_columns, write_partition):
    write_partition(tmp_path, {"a.parquet": _table()})
    cols = make_columns(slots=("item", "history", "tags"), sequences={"history": 10})
    (_,), ((batch,),) = _read(tmp_path, cols, 100)
    index = batch.sequences["history"]
    kept = index[index >= 0]
    assert sorted(kept.tolist()) == np.flatnonzero(batch.field == -1).tolist()  # each once
    assert np.array_equal(batch.example[index].clip(0)[index >= 0],
                          np.nonzero(index >= 0)[0])  # each points at an id of its own row
    assert (batch.slots[kept] == 1).all()  # the history column's table slot
    # pooled fields are positions in [item, tags]: 0 and 1 (the column index of tags is 2)
    assert sorted(set(batch.field[batch.field >= 0].tolist())) == [0, 1]
    assert (batch.keys[batch.field == 1].view(np.int64) == np.arange(7)).all()
    # sequence ids are pulled and pushed like any other: they are in the de-duplicated features
    d = dedup(batch)
    assert set(d.keys[d.slots == 1].view(np.int64).tolist()) == {1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14,
                                                                 I64.min, -1, 0}


def test_sequences_span_batches_row_groups_and_files(tmp_path, make_columns, write_partition):
    rng = np.random.default_rng(0)
    lists = [rng.integers(0, 50, rng.integers(0, 9)).tolist() for _ in range(53)]
    write_partition(tmp_path, {"a.parquet": _table(lists[:30]), "b.parquet": _table(lists[30:])},
                    row_group_size=7)
    cols = make_columns(slots=("item", "history", "tags"), sequences={"history": 4})
    readers, per_worker = _read(tmp_path, cols, 5, workers=2)
    got = {}
    for batches in per_worker:
        for b in batches:
            rows = [(path, first + i) for path, first, count in b.sources for i in range(count)]
            for (path, row), seq in zip(rows, _sequence_keys(b, "history")):
                got[(path.endswith("b.parquet"), row)] = seq
    want = {(i >= 30, i - 30 * (i >= 30)): lst[-4:] for i, lst in enumerate(lists)}
    assert got == want
    assert sum(r.stats.truncated_ids for r in readers) == sum(max(len(x) - 4, 0) for x in lists)


def test_shared_table_of_target_and_history(tmp_path, make_columns, write_partition):
    write_partition(tmp_path, {"a.parquet": _table([[100, 101], [100], [5]])})
    cols = make_columns(slots=("item", "history", "tags"), sequences={"history": 2},
                        shared_tables={"items": ("item", "history")})
    (_,), ((batch,),) = _read(tmp_path, cols, 10)
    d = dedup(batch)
    items = d.slots == 0
    assert set(d.keys[items].view(np.int64).tolist()) == {100, 101, 102, 5}  # one table for both
    row_of_100 = d.inverse[(batch.keys == np.uint64(100))]
    assert len(set(row_of_100.tolist())) == 1 and d.shows[row_of_100[0]] == 3  # target + 2 histories
    assert set(batch.field[batch.slots == 0].tolist()) == {0, -1}


def test_bad_rows_leave_the_sequences_and_counts_of_the_rows_kept(tmp_path, make_columns, write_partition):
    t = _table().set_column(0, "label", pa.array([5, 0, 1, 0, 1, 9, 0], pa.int64()))  # rows 0 and 5 bad
    write_partition(tmp_path, {"a.parquet": t})
    cols = make_columns(slots=("item", "history", "tags"), sequences={"history": 3}, bad_rows="quarantine")
    part = locate(str(tmp_path), HOUR)
    files, _ = check_schema(part, list_files(part, checksums=False), cols)
    reader = BatchReader(assign_work(files, 1)[0], cols, 100, quarantine_path=str(tmp_path / "q.parquet"))
    (batch,) = list(reader)
    assert _sequence_keys(batch, "history") == [[], [], [7, 8], [9], [I64.min, -1, 0]]
    assert reader.stats.truncated_ids == 0 and reader.stats.bad_rows == 2
    with pytest.raises(BadRowError):
        list(BatchReader(assign_work(files, 1)[0], make_columns(slots=("item", "history"),
                                                                sequences={"history": 3}), 100))


def test_a_scalar_column_cannot_be_a_sequence(tmp_path, make_columns, write_partition):
    write_partition(tmp_path, {"a.parquet": _table()})
    cols = make_columns(slots=("item", "history"), sequences={"item": 3})
    part = locate(str(tmp_path), HOUR)
    with pytest.raises(SchemaError, match=r"column 'item' \(sequence\): a sequence slot must be a list"):
        check_schema(part, list_files(part, checksums=False), cols)


def test_without_sequences_fields_are_the_column_indexes(tmp_path, make_columns, write_partition):
    write_partition(tmp_path, {"a.parquet": _table()})
    cols = make_columns(slots=("item", "history", "tags"))
    (reader,), ((batch,),) = _read(tmp_path, cols, 100)
    assert batch.sequences == {} and reader.stats.truncated_ids == 0
    assert sorted(set(batch.field.tolist())) == [0, 1, 2]
