import hashlib

import pyarrow as pa
import pytest

from trainer.partition import (DataFile, InputError, SchemaError, assign_work, check_schema, is_complete,
                               list_files, locate, open_root)

HOUR = 498805


def test_locate_complete_and_list(tmp_path, base_table, write_partition):
    part_dir = write_partition(tmp_path, {"b.parquet": base_table(4), "a.parquet": base_table(3)}, success=False)
    (part_dir / ".hidden.parquet").write_bytes(b"x")
    (part_dir / "_tmp").write_bytes(b"x")
    (part_dir / "sub").mkdir()
    part = locate(str(tmp_path), HOUR)
    assert part.path == str(part_dir) and part.location.endswith("dt=2026-11-26/hour=13")
    assert not is_complete(part)
    (part_dir / "_SUCCESS").touch()
    assert is_complete(part)
    files = list_files(part)
    assert [f.name for f in files] == ["a.parquet", "b.parquet"]
    raw = (part_dir / "a.parquet").read_bytes()
    assert files[0].bytes == len(raw) and files[0].sha256 == hashlib.sha256(raw).hexdigest()
    assert files[0].record() == {"name": "a.parquet", "bytes": len(raw), "sha256": files[0].sha256}
    assert list_files(part, checksums=False)[0].sha256 == ""


def test_uri_root_and_missing_partition(tmp_path):
    fs, path = open_root(f"file://{tmp_path}")
    assert path == str(tmp_path)
    part = locate(f"file://{tmp_path}", HOUR)
    assert not is_complete(part)
    with pytest.raises(InputError, match="no such folder"):
        list_files(part)


def test_check_schema_fills_row_groups_and_dense_dim(tmp_path, columns, base_table, write_partition):
    t = base_table(10).append_column("vec", pa.array([[1.0, 2.0, 3.0]] * 10, pa.list_(pa.float32(), 3)))
    write_partition(tmp_path, {"a.parquet": t}, row_group_size=4)
    part = locate(str(tmp_path), HOUR)
    files, dense_dim = check_schema(part, list_files(part), columns)
    assert files[0].row_groups == (4, 4, 2) and files[0].rows == 10 and dense_dim == 2
    cols = type(columns)(slots=columns.slots, dense=("d0", "vec"))
    assert check_schema(part, files, cols)[1] == 4


@pytest.mark.parametrize("mutate, column, words", [
    (lambda t: t.drop_columns(["d1"]), "d1", "missing"),
    (lambda t: t.drop_columns(["label"]), "label", "missing"),
    (lambda t: t.set_column(1, "user", pa.array([str(i) for i in range(6)])), "user", "got string"),
    (lambda t: t.set_column(1, "user", pa.array(range(6), pa.int32())), "user", "got int32"),
    (lambda t: t.set_column(2, "tags", pa.array([[1.0]] * 6)), "tags", "double>"),
    (lambda t: t.set_column(3, "d0", pa.array(["a"] * 6)), "d0", "got string"),
    (lambda t: t.set_column(0, "label", pa.array(["1"] * 6)), "label", "got string"),
])
def test_schema_errors_name_file_and_column(tmp_path, columns, base_table, write_partition, mutate, column, words):
    write_partition(tmp_path, {"a.parquet": base_table(), "b.parquet": mutate(base_table())})
    part = locate(str(tmp_path), HOUR)
    with pytest.raises(SchemaError) as err:
        check_schema(part, list_files(part), columns)
    msg = str(err.value)
    assert "b.parquet" in msg and repr(column) in msg and words in msg
    assert err.value.column == column and err.value.file.endswith("b.parquet")


def test_show_must_be_integer(tmp_path, base_table, write_partition, make_columns):
    t = base_table().append_column("show", pa.array([1.0] * 6))
    write_partition(tmp_path, {"a.parquet": t})
    part = locate(str(tmp_path), HOUR)
    with pytest.raises(SchemaError, match="'show'.*integer"):
        check_schema(part, list_files(part), make_columns(show="show", slots=("user",), dense=()))


def test_unreadable_file_named(tmp_path, columns, write_partition):
    part_dir = write_partition(tmp_path, {})
    (part_dir / "junk.parquet").write_bytes(b"not parquet at all")
    part = locate(str(tmp_path), HOUR)
    with pytest.raises(InputError, match="junk.parquet.*not a readable Parquet"):
        check_schema(part, list_files(part), columns)


def test_assign_work_deterministic_balanced_complete():
    files = [DataFile(f"f{i}", f"/p/f{i}", 0, row_groups=tuple(100 + (7 * i + 3 * r) % 50 for r in range(5)))
             for i in range(4)] + [DataFile("empty", "/p/empty", 0, row_groups=(0,))]
    for workers in (1, 3, 7, 30):
        a = assign_work(files, workers)
        b = assign_work(list(reversed(files)), workers)
        assert a == b and len(a) == workers
        units = [(u.path, u.row_group) for w in a for u in w]
        assert sorted(units) == sorted((f.path, r) for f in files[:4] for r in range(5))  # once each
        loads = [sum(u.rows for u in w) for w in a]
        if workers <= 3:
            assert max(loads) - min(loads) <= 150
        for w in a:  # read order within a worker is file order
            assert [(u.path, u.row_group) for u in w] == sorted((u.path, u.row_group) for u in w)
    u = assign_work(files, 1)[0]
    assert [x.first_row for x in u[:3]] == [0, files[0].row_groups[0], sum(files[0].row_groups[:2])]
    with pytest.raises(ValueError, match="num_workers"):
        assign_work(files, 0)
