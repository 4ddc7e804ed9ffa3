import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.partition import SchemaError, assign_work, check_schema, list_files, locate
from trainer.reader import BadRowError, BatchReader, dedup, read_batches, slot_ids

HOUR = 498805
I64 = np.iinfo(np.int64)


def _units(tmp_path, columns, workers=1):
    part = locate(str(tmp_path), HOUR)
    files, _ = check_schema(part, list_files(part, checksums=False), columns)
    return assign_work(files, workers)


def _features(batches, file_rows):
    """{(file row, field): sorted keys} over all batches, using batch.sources to map rows."""
    out = {}
    for b in batches:
        rows = np.concatenate([np.arange(first, first + n) for _, first, n in b.sources])
        for k, f, e in zip(b.keys, b.field, b.example):
            out.setdefault((int(rows[e]), int(f)), []).append(int(k))
    return {k: sorted(v) for k, v in out.items()}


def test_batches_values_and_sizes(tmp_path, columns, base_table, write_partition):
    write_partition(tmp_path, {"a.parquet": base_table(10), "b.parquet": base_table(7)}, row_group_size=4)
    reader = BatchReader(_units(tmp_path, columns)[0], columns, batch_size=5)
    batches = list(reader)
    assert [b.num_rows for b in batches] == [5, 5, 5, 2]  # batches span row groups and files
    b0 = batches[0]
    assert b0.labels.dtype == np.float32 and b0.labels.tolist() == [0, 1, 0, 1, 0]
    assert b0.dense.dtype == np.float32 and b0.dense.shape == (5, 2) and b0.dense.flags.c_contiguous
    assert b0.dense[:, 0].tolist() == [0, 1, 2, 3, 4] and b0.shows.tolist() == [1] * 5 and not b0.has_shows
    assert b0.keys.dtype == np.uint64 and b0.slots.dtype == np.int32 and b0.example.dtype == np.int32
    feats = _features(batches[:2], 10)
    # user slot (field 0): one id per row; tags (field 1): [i, i+1] unless i % 3 == 0 (empty list)
    assert feats[(0, 0)] == [100] and feats[(9, 0)] == [109]
    assert (0, 1) not in feats and (3, 1) not in feats and feats[(4, 1)] == [4, 5]
    assert reader.stats.rows == reader.stats.rows_read == 17 and reader.stats.bad_rows == 0
    assert sum(b.num_features for b in batches) == 17 + 2 * sum(1 for i in list(range(10)) + list(range(7)) if i % 3)


def test_edge_ids_int64_and_uint64_nulls_and_empties(tmp_path, make_columns, write_partition):
    edge = [0, -1, I64.min, I64.max, None]
    t = pa.table({
        "label": pa.array([True, False, True, False, True]),
        "s": pa.array(edge, pa.int64()),
        "u": pa.array([0, 2**64 - 1, 2**63, 1, None], pa.uint64()),
        "l": pa.array([[I64.min, None, -1], None, [], [5, 5], [I64.max]], pa.list_(pa.int64())),
        "lu": pa.array([[2**64 - 1], [], None, [0], [1]], pa.large_list(pa.uint64())),
    })
    write_partition(tmp_path, {"a.parquet": t})
    cols = make_columns(slots=("s", "u", "l", "lu"))
    (b,) = list(read_batches(_units(tmp_path, cols)[0], cols, 100))
    got = {(int(e), int(f)): [] for e, f in zip(b.example, b.field)}
    for k, f, e in zip(b.keys, b.field, b.example):
        got[(int(e), int(f))].append(int(k))
    u64 = lambda v: v % 2**64  # noqa: E731
    assert got[(0, 0)] == [0] and got[(1, 0)] == [u64(-1)] and got[(2, 0)] == [2**63] and got[(3, 0)] == [2**63 - 1]
    assert (4, 0) not in got and (4, 1) not in got
    assert got[(1, 1)] == [2**64 - 1] and got[(2, 1)] == [2**63]
    assert got[(0, 2)] == [2**63, 2**64 - 1]  # null element dropped
    assert (1, 2) not in got and (2, 2) not in got and got[(3, 2)] == [5, 5]
    assert got[(0, 3)] == [2**64 - 1] and (1, 3) not in got and (2, 3) not in got
    assert b.dense.shape == (5, 0) and b.labels.tolist() == [1, 0, 1, 0, 1]


def test_shared_tables_share_slot_ids_but_not_fields(tmp_path, make_columns, write_partition):
    t = pa.table({"label": [0, 1], "a": pa.array([7, 8], pa.int64()), "b": pa.array([7, 9], pa.int64()),
                  "c": pa.array([7, 7], pa.int64())})
    write_partition(tmp_path, {"a.parquet": t})
    cols = make_columns(slots=("a", "b", "c"), shared_tables={"ids": ("b", "c")})
    assert slot_ids(cols).tolist() == [0, 1, 1]
    (b,) = list(read_batches(_units(tmp_path, cols)[0], cols, 10))
    d = dedup(b)
    pairs = sorted(zip(d.slots.tolist(), d.keys.tolist()))
    assert pairs == [(0, 7), (0, 8), (1, 7), (1, 9)]  # 'a' 7 is its own row; 'b' 7 and 'c' 7 share one
    assert sorted(set(b.field.tolist())) == [0, 1, 2]
    assert d.shows[d.inverse[(b.slots == 1) & (b.keys == 7)][0]] == 3  # b row0, c row0, c row1


def test_dedup_counts_and_inverse(columns):
    from trainer.reader import Batch
    rng = np.random.default_rng(0)
    m, n = 300, 40
    b = Batch(labels=rng.integers(0, 2, n).astype(np.float32), shows=rng.integers(1, 4, n).astype(np.float32),
              dense=np.zeros((n, 0), np.float32), keys=rng.integers(0, 20, m).astype(np.uint64) * np.uint64(2**60),
              slots=rng.integers(0, 3, m).astype(np.int32), field=np.zeros(m, np.int32),
              example=rng.integers(0, n, m).astype(np.int32))
    d = dedup(b)
    assert np.array_equal(d.keys[d.inverse], b.keys) and np.array_equal(d.slots[d.inverse], b.slots)
    assert len(set(zip(d.slots.tolist(), d.keys.tolist()))) == len(d.keys)
    assert list(zip(d.slots.tolist(), d.keys.tolist())) == sorted(zip(d.slots.tolist(), d.keys.tolist()))
    for u in range(len(d.keys)):
        ex = b.example[d.inverse == u]
        assert d.shows[u] == b.shows[ex].sum() and d.clicks[u] == (b.shows * b.labels)[ex].sum()


@pytest.mark.parametrize("column, values, words", [
    ("label", pa.array([0, 1, 2, 0, 1, 0]), "row 2: label must be 0 or 1, got 2.0"),
    ("label", pa.array([0, 1, 0, None, 1, 0], pa.int64()), "row 3: label is null"),
    ("label", pa.array([0.0, 1.0, 0.5, 0, 1, 0]), "row 2: label must be 0 or 1, got 0.5"),
    ("d0", pa.array([0.0, 1.0, 2.0, 3.0, float("nan"), 5.0]), "row 4: dense value is NaN"),
    ("d1", pa.array([0.0, float("inf"), 2.0, 3.0, 4.0, 5.0], pa.float32()), "row 1: dense value is +inf"),
    ("d0", pa.array([0.0, 1.0, -1e39, 3.0, 4.0, 5.0]), "row 2: dense value -1e+39 is infinite as float32"),
])
def test_bad_row_fail_names_file_column_row(tmp_path, columns, base_table, write_partition, column, values, words):
    t = base_table(6)
    t = t.set_column(t.schema.get_field_index(column), column, values)
    write_partition(tmp_path, {"a.parquet": base_table(3), "b.parquet": t})
    with pytest.raises(BadRowError) as err:
        list(read_batches(_units(tmp_path, columns)[0], columns, 4))
    assert "b.parquet" in str(err.value) and f"column {column!r}" in str(err.value) and words in str(err.value)
    assert err.value.column == column


def test_bad_row_row_number_counts_earlier_row_groups(tmp_path, columns, base_table, write_partition):
    t = base_table(10)
    t = t.set_column(0, "label", pa.array([0] * 9 + [3]))
    write_partition(tmp_path, {"a.parquet": t}, row_group_size=4)
    with pytest.raises(BadRowError, match="row 9:"):
        list(read_batches(_units(tmp_path, columns)[0], columns, 3))


def test_quarantine_moves_and_counts_bad_rows(tmp_path, make_columns, base_table, write_partition):
    cols = make_columns(slots=("user", "tags"), dense=("d0", "d1"), bad_rows="quarantine", show="show")
    t = base_table(8).append_column("show", pa.array([1, 2, 0, 1, None, 1, 1, 3], pa.int64()))
    t = t.set_column(0, "label", pa.array([0, 1, 1, 5, 0, 1, 0, 1]))
    t = t.set_column(3, "d0", pa.array([0.0, None, 2.0, 3.0, 4.0, float("-inf"), None, 7.0]))
    write_partition(tmp_path / "data", {"a.parquet": t}, row_group_size=3)
    q = tmp_path / "q" / "bad.parquet"
    reader = BatchReader(_units(tmp_path / "data", cols)[0], cols, 100, quarantine_path=str(q))
    batches = list(reader)
    kept = [0, 1, 6, 7]
    (b,) = batches
    assert b.labels.tolist() == [0, 1, 0, 1] and b.shows.tolist() == [1, 2, 1, 3] and b.has_shows
    assert b.dense[:, 0].tolist() == [0, 0, 0, 7]  # nulls filled with dense_fill 0
    assert sorted(set(b.keys[b.field == 0].tolist())) == [100 + i for i in kept]
    assert sorted(b.example[b.field == 0].tolist()) == [0, 1, 2, 3]
    s = reader.stats
    assert (s.rows_read, s.rows, s.bad_rows, s.dense_nulls) == (8, 4, 4, 2)
    qt = pq.read_table(q)
    assert qt["_row"].to_pylist() == [2, 3, 4, 5]
    reasons = qt["_reason"].to_pylist()
    assert "show" in reasons[0] and "label" in reasons[1] and "show is null" in reasons[2] and "d0" in reasons[3]
    assert qt["_file"].to_pylist()[0].endswith("a.parquet") and qt["label"].to_pylist() == [1, 5, 0, 1]
    assert sum(s.reasons.values()) == 4


def test_no_quarantine_file_without_bad_rows(tmp_path, make_columns, base_table, write_partition):
    cols = make_columns(slots=("user",), dense=("d0",), bad_rows="quarantine")
    write_partition(tmp_path / "d", {"a.parquet": base_table(5)})
    q = tmp_path / "q.parquet"
    list(read_batches(_units(tmp_path / "d", cols)[0], cols, 2, quarantine_path=str(q)))
    assert not q.exists()


def test_dense_null_counted_fixed_size_list_and_fill(tmp_path, make_columns, write_partition):
    t = pa.table({"label": [0, 1, 0], "s": pa.array([1, 2, 3], pa.int64()),
                  "d": pa.array([1, None, 3], pa.int32()),
                  "v": pa.array([[1.0, None], None, [5.0, 6.0]], pa.list_(pa.float64(), 2))})
    write_partition(tmp_path, {"a.parquet": t})
    cols = make_columns(slots=("s",), dense=("d", "v"), dense_fill=-9.0)
    reader = BatchReader(_units(tmp_path, cols)[0], cols, 10)
    (b,) = list(reader)
    assert b.dense.tolist() == [[1, 1, -9], [-9, -9, -9], [3, 5, 6]]
    assert reader.stats.dense_nulls == 4


def test_type_changed_between_footer_check_and_read_is_caught(tmp_path, columns, base_table, write_partition):
    write_partition(tmp_path, {"a.parquet": base_table(4)})
    units = _units(tmp_path, columns)
    part_file = units[0][0].path
    t = base_table(4)
    pq.write_table(t.set_column(3, "d0", pa.array(["x"] * 4)), part_file)
    with pytest.raises(SchemaError, match="'d0'"):
        list(read_batches(units[0], columns, 2))


def test_every_row_read_once_across_workers(tmp_path, columns, base_table, write_partition):
    write_partition(tmp_path, {"a.parquet": base_table(23), "b.parquet": base_table(11)}, row_group_size=5)
    total = []
    for w in _units(tmp_path, columns, workers=3):
        for b in read_batches(w, columns, 4):
            for path, first, n in b.sources:
                total += [(path.rsplit("/", 1)[1], r) for r in range(first, first + n)]
    assert sorted(total) == sorted([("a.parquet", r) for r in range(23)] + [("b.parquet", r) for r in range(11)])


def test_slot_ids_of_the_real_config_class():
    config = pytest.importorskip("trainer.config", exc_type=ImportError)
    cc = config.ColumnsConfig(slots=("a", "b", "c", "d"), shared_tables={"g": ("d", "b")})
    # the group's first-listed slot gives the id, whatever its position in columns.slots
    assert slot_ids(cc).tolist() == [0, 3, 2, 3]


def test_fail_names_the_first_bad_row_in_file_order_whatever_the_check(
        tmp_path, make_columns, base_table, write_partition):
    """A later null label must not hide an earlier bad label, nor a dense NaN before both."""
    cols = make_columns(slots=("user",), dense=("d0", "d1"))
    t = base_table(40)
    labels = [i % 2 for i in range(40)]
    labels[20], labels[17] = None, 2  # one row group (rows 16-23)
    t = t.set_column(0, "label", pa.array(labels, pa.int64()))
    write_partition(tmp_path, {"a.parquet": t}, row_group_size=8)
    with pytest.raises(BadRowError) as err:
        list(read_batches(_units(tmp_path, cols)[0], cols, 5))
    assert "column 'label', row 17: label must be 0 or 1, got 2.0" in str(err.value)
    assert err.value.row == 17
    d1 = [0.5] * 40
    d1[12] = float("nan")
    t = t.set_column(t.schema.get_field_index("d1"), "d1", pa.array(d1, pa.float32()))
    write_partition(tmp_path, {"a.parquet": t}, row_group_size=8)
    with pytest.raises(BadRowError, match=r"column 'd1', row 12: dense value is NaN"):
        list(read_batches(_units(tmp_path, cols)[0], cols, 5))


def test_quarantine_keeps_every_reason_of_a_row_with_the_values(
        tmp_path, make_columns, base_table, write_partition):
    cols = make_columns(slots=("user",), dense=("d0", "d1"), bad_rows="quarantine")
    t = base_table(6)
    t = t.set_column(0, "label", pa.array([0, 1, 7, 0, None, 1], pa.int64()))
    t = t.set_column(3, "d0", pa.array([0.0, float("nan"), 2.0, 3.0, 4.0, 5.0]))
    t = t.set_column(4, "d1", pa.array([0.5, float("inf"), 0.5, float("-inf"), 0.5, 0.5],
                                       pa.float32()))
    write_partition(tmp_path / "data", {"a.parquet": t})
    q = tmp_path / "bad.parquet"
    reader = BatchReader(_units(tmp_path / "data", cols)[0], cols, 10, quarantine_path=str(q))
    list(reader)
    qt = pq.read_table(q)
    assert qt["_row"].to_pylist() == [1, 2, 3, 4]
    assert qt["_reason"].to_pylist() == [
        "d0: dense value is NaN; d1: dense value is +inf",
        "label: label must be 0 or 1, got 7.0",
        "d1: dense value is -inf",
        "label: label is null",
    ]
    assert reader.stats.bad_rows == 4
    assert reader.stats.reasons == {
        "label: label is null": 1, "label: label must be 0 or 1": 1,
        "d0: dense value is NaN or infinite (as float32)": 1,
        "d1: dense value is NaN or infinite (as float32)": 2}


def test_tiny_row_groups_are_read_together_into_the_same_batches(
        tmp_path, make_columns, base_table, write_partition, monkeypatch):
    """One-row row groups give the same batches, rows and sources as one row group, read as
    a few chunks (not one per row group)."""
    from trainer import reader as reader_module
    reads = []
    real_read = reader_module.RowGroupReader.read
    monkeypatch.setattr(reader_module, "COALESCE_ROWS", 100)
    monkeypatch.setattr(reader_module.RowGroupReader, "read",
                        lambda self, units, *a: reads.append(len(units)) or real_read(self, units, *a))
    cols = make_columns(slots=("user", "tags"), dense=("d0", "d1"), bad_rows="quarantine")
    t = base_table(300)
    t = t.set_column(0, "label", pa.array([3 if i == 150 else i % 2 for i in range(300)]))
    batches = {}
    for name, size in (("one", None), ("tiny", 1)):
        write_partition(tmp_path / name, {"a.parquet": t}, row_group_size=size)
        units = _units(tmp_path / name, cols, workers=2)
        batches[name] = [list(BatchReader(w, cols, 64, quarantine_path=str(tmp_path / f"{name}-q"
                                                                             f"{i}.parquet")))
                         for i, w in enumerate(units)]
    assert sum(len(w) for w in _units(tmp_path / "tiny", cols, workers=2)) == 300
    assert reads == [1, 100, 50, 100, 50]  # one row group; then per worker: 150 row groups in 2
    one_rows = [[r for b in w for r in _rows(b)] for w in batches["one"]]
    tiny_rows = [[r for b in w for r in _rows(b)] for w in batches["tiny"]]
    # two workers share the tiny row groups: each reads its every other row, in file order
    assert sorted(tiny_rows[0] + tiny_rows[1]) == sorted(one_rows[0] + one_rows[1])
    assert 150 not in tiny_rows[0] + tiny_rows[1] and tiny_rows[0] == sorted(tiny_rows[0])
    assert len(batches["tiny"][0][0].sources) == 64  # every other row: one run per row
    tiny = {r: (float(b.labels[i]), float(b.dense[i, 0])) for w in batches["tiny"] for b in w
            for i, r in enumerate(_rows(b))}
    assert tiny == {r: (float(i % 2), float(r)) for i, r in enumerate(range(300)) if r != 150}


def _rows(batch) -> list[int]:
    return [r for _, first, n in batch.sources for r in range(first, first + n)]


def test_a_quarantine_file_that_cannot_be_written_is_named(tmp_path, make_columns, base_table,
                                                           write_partition):
    cols = make_columns(slots=("user",), dense=("d0",), bad_rows="quarantine")
    t = base_table(4)
    write_partition(tmp_path / "data", {"a.parquet": t.set_column(0, "label", pa.array([0, 5, 1, 0]))})
    (tmp_path / "blocked").write_text("a file where the quarantine folder should be")
    q = tmp_path / "blocked" / "q.parquet"
    with pytest.raises(OSError, match=f"quarantine file {q}: "):
        list(read_batches(_units(tmp_path / "data", cols)[0], cols, 10, quarantine_path=str(q)))
