"""Threaded shard writes and reads, the lazy shard split and the fast-path encoders: same bytes,
same guarantees (temp + fsync + rename, CRC of the bytes on disk, verified reads, errors naming
version and file) as the one-at-a-time path."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.store.store_helpers import DIM, H0, K, NUM_SHARDS, dense_arrays, make_cols, split_shards
from trainer.store import (CorruptFileError, SchemaError, Stage, StoreError, load_chain, save)
from trainer.store import columns as C
from trainer.store import load as L
from trainer.store.layout import checksum, shard_file_name


def _open(model_dir, hour=H0, kind="full", parent=None, **kw):
    return Stage.open(model_dir, hour, kind, parent, num_shards=kw.pop("num_shards", NUM_SHARDS),
                      dim=DIM, opt_width=K, optimizer_rule="adagrad", **kw)


def _commit(st, infos, hour=H0, kind="full"):
    st.finish(list(infos) + [st.write_dense(dense_arrays())], metrics={"auc": 0.5})
    return save(st.layout.root, hour, kind=kind)


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint8).tobytes(), a.dtype, a.shape


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for c in a:
        assert _bits(a[c]) == _bits(b[c]), c


def _odd_floats(cols):
    """Bit patterns a float round trip could lose: NaN payloads, -0.0, denormals, inf."""
    w = cols["weights"].view(np.uint32)
    specials = np.array([0x7FC00001, 0xFFF12345, 0x80000000, 0x00000001, 0x7F800000, 0xFF800000],
                        np.uint32)
    w[: len(specials), 0] = specials
    if cols["opt_state"].shape[1]:
        cols["opt_state"].view(np.uint32)[: len(specials), -1] = specials[::-1]
    return cols


# -- write_shards ------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_write_shards_same_files_as_write_shard(tmp_path, threads):
    cols = _odd_floats(make_cols(3000, seed=4))
    parts = split_shards(cols)
    one = _open(tmp_path / "a")
    serial = [one.write_shard(s, c) for s, c in enumerate(parts)]
    many = _open(tmp_path / "b")
    threaded = many.write_shards({s: c for s, c in enumerate(parts)}, threads=threads)
    assert [i.to_dict() for i in threaded] == [i.to_dict() for i in serial]
    for s in range(NUM_SHARDS):
        name = shard_file_name(s)
        data = (many.dir / name).read_bytes()
        assert data == (one.dir / name).read_bytes()
        assert checksum(data) == threaded[s].checksum and len(data) == threaded[s].bytes
    assert sorted(p.name for p in many.dir.iterdir()) == [shard_file_name(s) for s in range(NUM_SHARDS)]
    _commit(many, threaded)
    ch = load_chain(tmp_path / "b", verify=True)
    for s in range(NUM_SHARDS):
        _same(ch.read_shard(ch.head, s), parts[s])


def test_write_shards_order_follows_input_and_pairs_are_lazy(tmp_path):
    parts = split_shards(make_cols(2000, seed=5))
    st = _open(tmp_path)
    pulled, done, most = [0], [0], [0]
    lock = threading.Lock()
    real = st.write_shard

    def counting_write(shard_id, cols):
        try:
            return real(shard_id, cols)
        finally:
            with lock:
                done[0] += 1

    st.write_shard = counting_write

    def pairs():
        for s in (2, 0, 3, 1):
            with lock:
                pulled[0] += 1
                most[0] = max(most[0], pulled[0] - done[0])
            yield s, parts[s]

    infos = st.write_shards(pairs(), threads=2)
    assert [i.shard for i in infos] == [2, 0, 3, 1]
    assert most[0] <= 3  # threads + 1 shards held at most


def test_write_shards_errors_name_file_and_leave_no_temp(tmp_path):
    parts = split_shards(make_cols(500, seed=6))
    bad = dict(parts[2], weights=parts[2]["weights"][:, :2])
    st = _open(tmp_path)
    with pytest.raises(SchemaError, match=r"staging .*shard-00002.parquet: column 'weights'"):
        st.write_shards({0: parts[0], 1: parts[1], 2: bad, 3: parts[3]}, threads=2)
    assert not [p.name for p in st.dir.iterdir() if ".tmp-" in p.name]
    with pytest.raises(StoreError, match="shard 1 given twice"):
        st.write_shards([(1, parts[1]), (1, parts[1])], threads=2)
    with pytest.raises(StoreError, match="shard 9 out of range"):
        st.write_shards([(0, parts[0]), (9, parts[1])], threads=2)
    # a retry with good columns still stages and commits
    infos = st.write_shards(dict(enumerate(parts)))
    _commit(st, infos)
    assert load_chain(tmp_path, verify=True).head == "v000001"


def test_write_shards_first_error_in_input_order(tmp_path):
    parts = split_shards(make_cols(400, seed=7))
    bad = {s: dict(parts[s], slot=parts[s]["slot"].astype(np.int64)) for s in (1, 3)}
    st = _open(tmp_path)
    with pytest.raises(SchemaError, match="shard-00001"):
        st.write_shards({0: parts[0], 1: bad[1], 2: parts[2], 3: bad[3]}, threads=3)


def test_write_error_names_file_and_removes_temp(tmp_path, monkeypatch):
    st = _open(tmp_path)
    import trainer.store.stage as stage_mod

    real_fsync = stage_mod.os.fsync

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stage_mod.os, "fsync", failing_fsync)
    with pytest.raises(StoreError, match=r"staging .*/shard-00000.parquet: cannot write .*No space"):
        st.write_shards({0: split_shards(make_cols(50))[0]}, threads=2)
    monkeypatch.setattr(stage_mod.os, "fsync", real_fsync)
    assert list(st.dir.iterdir()) == []


# -- split_by_shard ----------------------------------------------------------------------------
@pytest.mark.parametrize("num_shards", [1, 5, 300, 70_000])
def test_split_by_shard_matches_masks(num_shards):
    cols = make_cols(5000, seed=8)
    rng = np.random.default_rng(9)
    owner = rng.integers(0, num_shards, 5000).astype(np.int32)
    wanted = sorted(set(rng.integers(0, num_shards, 6).tolist()) | {num_shards - 1})
    got = list(C.split_by_shard(cols, owner, wanted))
    assert [s for s, _ in got] == wanted
    for s, part in got:
        _same(part, {c: a[owner == s] for c, a in cols.items()})
        assert all(a.flags.c_contiguous for a in part.values())


def test_column_major_columns_write_the_same_file(tmp_path):
    cols = make_cols(1000, seed=3)
    fortran = dict(cols, weights=np.asfortranarray(cols["weights"]),
                   opt_state=np.asfortranarray(cols["opt_state"]))
    a = C.encode_parquet(C.check_columns(cols, dim=DIM, opt_width=K, where="t"))
    b = C.encode_parquet(C.check_columns(fortran, dim=DIM, opt_width=K, where="t"))
    assert a.to_pybytes() == b.to_pybytes()


def test_split_by_shard_empty_and_errors():
    cols = make_cols(0)
    (s, part), = C.split_by_shard(cols, np.zeros(0, np.int32), [3])
    assert s == 3 and part["weights"].shape == (0, 1 + DIM) and part["key"].dtype == np.uint64
    cols = make_cols(4)
    with pytest.raises(SchemaError, match=r"owner: expected \[4\]"):
        list(C.split_by_shard(cols, np.zeros(3, np.int32), [0]))
    with pytest.raises(SchemaError, match="negative"):
        list(C.split_by_shard(cols, np.array([0, -1, 0, 0]), [0]))


# -- columns: fixed-size matrix columns, pooled arrays, the preallocated encoder -------------------
@pytest.mark.parametrize("n", [0, 1, 7, 70_000])
@pytest.mark.parametrize("k", [0, 2])
def test_encode_decode_bit_identical(n, k):
    import pyarrow as pa
    import pyarrow.parquet as pq
    cols = _odd_floats(make_cols(n, k=k, seed=n)) if n >= 6 else make_cols(n, k=k, seed=n)
    buf = C.encode_parquet(C.check_columns(cols, dim=DIM, opt_width=k, where="t"))
    for use_threads in (True, False):
        back = C.decode_parquet(buf, where="t", opt_width=k, use_threads=use_threads)
        _same(back, cols)
        assert back["weights"].flags.c_contiguous and back["opt_state"].shape == (n, k)
    # the file: one fixed-size column per matrix, self-described; none for an empty opt_state
    schema = pq.ParquetFile(pa.BufferReader(buf)).schema_arrow
    assert schema.field("weights").type == pa.binary(4 * (1 + DIM))
    assert schema.field("weights").metadata == {b"dtype": b"float32", b"width": str(1 + DIM).encode()}
    assert ("opt_state" in schema.names) == bool(k)


def test_decoded_matrices_are_views_of_the_column_bytes():
    """No copy after the Parquet decode: the matrix is the fixed-size column's buffer; a sliced
    (offset) column reads from its offset."""
    cols = C.check_columns(make_cols(100, seed=4), dim=DIM, opt_width=K, where="t")
    back = C.decode_parquet(C.encode_parquet(cols), where="t")
    assert not back["weights"].flags.writeable and not back["weights"].flags.owndata
    column = C.columns_to_table(cols).column("weights").chunk(0)
    assert _bits(C.matrix_of(column.slice(10, 5), "t", "weights")) == _bits(cols["weights"][10:15])


@pytest.mark.parametrize("column,match", [
    (lambda pa: pa.array([b"abc"], pa.binary(3)), r"t: column 'weights' has type fixed_size_binary\[3\], expected"),
    (lambda pa: pa.array([1.0], pa.float32()), r"t: column 'weights' has type float, expected fixed_size_binary"),
    (lambda pa: pa.array([None], pa.binary(4)), r"t: column 'weights' has 1 null"),
])
def test_bad_matrix_column_is_named(column, match):
    import pyarrow as pa
    with pytest.raises(SchemaError, match=match):
        C.matrix_of(column(pa), "t", "weights")


def test_encoder_fallback_when_size_bound_too_small(monkeypatch):
    cols = C.check_columns(make_cols(3000, seed=1), dim=DIM, opt_width=K, where="t")
    fast = C.encode_parquet(cols)
    monkeypatch.setattr(C, "encoded_size_bound", lambda table: 100)
    slow = C.encode_parquet(cols)
    assert fast.to_pybytes() == slow.to_pybytes()


@pytest.mark.parametrize("n,k", [(0, 2), (1, 0), (70_000, 2), (300_000, 20), (1_500_000, 0)])
def test_size_bound_holds(n, k, monkeypatch):
    """The preallocated buffer is big enough (else encode_parquet silently takes the slow path)."""
    import pyarrow as pa
    cols = C.check_columns(make_cols(n, k=k), dim=DIM, opt_width=k, where="t")

    def no_fallback():
        raise AssertionError("size bound too small: fell back to BufferOutputStream")

    monkeypatch.setattr(pa, "BufferOutputStream", no_fallback)
    buf = C.encode_parquet(cols)
    assert buf.size <= C.encoded_size_bound(C.columns_to_table(cols))


def test_many_row_groups_decode(monkeypatch):
    monkeypatch.setattr(C, "MAX_ROW_GROUP", 7)
    cols = make_cols(50, seed=2)
    buf = C.encode_parquet(C.check_columns(cols, dim=DIM, opt_width=K, where="t"))
    import pyarrow as pa
    import pyarrow.parquet as pq
    assert pq.ParquetFile(pa.BufferReader(buf)).metadata.num_row_groups == 8
    _same(C.decode_parquet(buf, where="t"), cols)


def test_one_row_group_per_shard():
    import pyarrow as pa
    import pyarrow.parquet as pq
    buf = C.encode_parquet(C.check_columns(make_cols(5000), dim=DIM, opt_width=K, where="t"))
    assert pq.ParquetFile(pa.BufferReader(buf)).metadata.num_row_groups == 1


def test_pooled_empty():
    a = C.empty((3, 4), np.float32)
    assert a.shape == (3, 4) and a.dtype == np.float32 and a.flags.writeable and a.flags.c_contiguous
    a[:] = 7
    assert C.empty(0, np.uint64).shape == (0,)
    assert C.empty((0, 5), np.float32).shape == (0, 5)


# -- iter_shards / verified reads ------------------------------------------------------------
@pytest.fixture
def chain2(tmp_path):
    """A base and one delta (with tombstones and pending entries), 4 shards."""
    base = make_cols(2000, seed=10)
    st = _open(tmp_path)
    v1 = _commit(st, st.write_shards(dict(enumerate(split_shards(base))))).version
    delta = make_cols(300, seed=11, keys=base["key"][:300], slots=base["slot"][:300],
                      states=np.arange(300) % 3)
    st = _open(tmp_path, H0 + 1, "delta", v1)
    _commit(st, st.write_shards(dict(enumerate(split_shards(delta)))), H0 + 1, "delta")
    return tmp_path


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_iter_shards_order_and_contents(chain2, threads):
    ch = load_chain(chain2)
    got = list(ch.iter_shards([3, 0, 2], threads=threads))
    want = [(s, v.version) for s in (3, 0, 2) for v in ch.versions]
    assert [(s, v) for s, v, _ in got] == want
    for s, v, cols in got:
        _same(cols, ch.read_shard(v, s))
    only = list(ch.iter_shards([1], columns=("key", "weights"), threads=threads))
    assert all(set(c) == {"key", "weights"} for _, _, c in only)


def test_iter_shards_corrupt_file_named_in_turn(chain2):
    ch = load_chain(chain2)
    p = ch.versions[1].dir / shard_file_name(2)
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    p.write_bytes(bytes(raw))
    seen = []
    with pytest.raises(CorruptFileError, match=r"version v000002 .*shard 2.*shard-00002.parquet checksum"):
        for s, v, _cols in ch.iter_shards(range(NUM_SHARDS), threads=2):
            seen.append((s, v))
    assert seen == [(0, "v000001"), (0, "v000002"), (1, "v000001"), (1, "v000002"), (2, "v000001")]


def test_iter_shards_early_close(chain2):
    ch = load_chain(chain2)
    it = ch.iter_shards(range(NUM_SHARDS), threads=2, prefetch=2)
    next(it)
    it.close()  # cancels what has not started, waits for the rest: returns, no hang
    before = threading.active_count()
    assert not [t for t in threading.enumerate() if t.name.startswith("chain-read")]
    assert threading.active_count() == before


@pytest.mark.parametrize("chunk", [L.READ_CHUNK, 4096, 1000])
def test_read_verified_returns_exactly_the_checked_bytes(chain2, chunk, monkeypatch):
    monkeypatch.setattr(L, "READ_CHUNK", chunk)  # small: the file is read in several pieces
    ch = load_chain(chain2)
    v = ch.versions[0]
    entry = v.file_entry(shard_file_name(1))
    p = v.dir / shard_file_name(1)
    raw = p.read_bytes()
    buf = L.read_verified(p, entry, "t")
    assert buf.to_pybytes() == raw and checksum(buf) == entry["checksum"]
    bad = bytearray(raw)
    bad[-10] ^= 1  # in the last piece
    p.write_bytes(bytes(bad))
    with pytest.raises(CorruptFileError, match=r"t: file .*shard-00001.parquet checksum"):
        L.read_verified(p, entry, "t")
    with pytest.raises(CorruptFileError, match=r"t: file .*shard-00001.parquet checksum"):
        L.verify_file(p, entry, "t")
    p.write_bytes(raw + b"x")
    with pytest.raises(CorruptFileError, match=r"t: file .*shard-00001.parquet has \d+ bytes"):
        L.read_verified(p, entry, "t")


@pytest.mark.parametrize("threads", [1, 2])
def test_parallel_verify_reports_first_bad_file(chain2, threads):
    ch = load_chain(chain2)
    v = ch.versions[0]
    for s in (3, 1):
        p = v.dir / shard_file_name(s)
        raw = bytearray(p.read_bytes())
        raw[10] ^= 1
        p.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="shard-00001.parquet checksum"):
        L.check_meta_files(v.dir, v.meta, f"version {v.version}", full=True, threads=threads)
    with pytest.raises(CorruptFileError, match="version v000001"):
        ch.verify()
    L.check_meta_files(v.dir, v.meta, "sizes only", full=False)  # sizes are still right


def test_admitted_rows_from_meta(chain2, tmp_path):
    ch = load_chain(chain2)
    total = 0
    for s in range(NUM_SHARDS):
        cols = ch.read_shard(ch.base, s)
        got = ch.admitted_rows([s])
        assert got == int((cols["state"] == 0).sum())
        total += got
    assert ch.admitted_rows(range(NUM_SHARDS)) == total == 2000
    delta = ch.read_shard(ch.head, 0)
    assert ch.admitted_rows([0], ch.head) == int((delta["state"] == 0).sum())
    assert load_chain(tmp_path / "empty").admitted_rows([0]) == 0
