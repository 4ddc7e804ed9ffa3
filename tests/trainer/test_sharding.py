import numpy as np
import pytest

from trainer.sharding import group_by_owner, mix64, server_of_shard, shard_of, shards_of_server

EDGE = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1], dtype=np.uint64)


def _ref_mix(key: int, slot: int) -> int:
    m = (1 << 64) - 1
    z = ((slot * 0x9E3779B97F4A7C15) & m) ^ key
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & m
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_mix_matches_pure_python_splitmix_including_edge_ids():
    slots = np.array([0, 1, 2, 3, 2**31 - 1], np.int32)
    got = mix64(EDGE, slots)
    assert [int(g) for g in got] == [_ref_mix(int(k), int(s)) for k, s in zip(EDGE, slots)]


def test_int64_keys_are_viewed_bit_for_bit():
    signed = np.array([-1, np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0], np.int64)
    slots = np.zeros(4, np.int32)
    assert np.array_equal(shard_of(signed, slots, 16), shard_of(signed.view(np.uint64), slots, 16))


def test_same_key_in_other_slot_is_another_feature():
    keys = np.full(64, 12345, np.uint64)
    slots = np.arange(64, dtype=np.int32)
    assert len(set(mix64(keys, slots).tolist())) == 64
    assert len(set(shard_of(keys, slots, 8).tolist())) > 1


def test_shards_are_balanced_and_in_range():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**64 - 1, 40_000, dtype=np.uint64, endpoint=True)
    slots = rng.integers(0, 4, keys.size).astype(np.int32)
    s = shard_of(keys, slots, 8)
    assert s.dtype == np.int32 and s.min() >= 0 and s.max() < 8
    counts = np.bincount(s, minlength=8)
    assert counts.min() > 0.9 * keys.size / 8
    # sequential ids spread too
    seq = shard_of(np.arange(8000, dtype=np.uint64), np.zeros(8000, np.int32), 8)
    assert np.bincount(seq, minlength=8).min() > 800


def test_shard_is_independent_of_server_count():
    keys = np.arange(100, dtype=np.uint64)
    slots = np.zeros(100, np.int32)
    s = shard_of(keys, slots, 8)
    for servers in (1, 2, 3, 8):
        srv = server_of_shard(s, servers)
        assert np.array_equal(srv, s % servers)


@pytest.mark.parametrize("num_shards, servers", [(8, 1), (8, 3), (6, 4), (2, 5)])
def test_every_shard_is_held_by_the_one_server_that_routes_it(num_shards, servers):
    """What a server loads and saves (``shards_of_server``) is what workers route to it."""
    held = [shards_of_server(srv, num_shards, servers) for srv in range(servers)]
    assert sorted(s for shards in held for s in shards) == list(range(num_shards))
    for srv, shards in enumerate(held):
        assert all(server_of_shard(s, servers) == srv for s in shards)


def test_group_by_owner_partitions_positions():
    owner = np.array([2, 0, 2, 1, 0, 2], np.int32)
    groups = group_by_owner(owner, 4)
    assert [g.tolist() for g in groups] == [[1, 4], [3], [0, 2, 5], []]
    assert group_by_owner(np.zeros(0, np.int32), 3)[2].size == 0
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        group_by_owner(owner, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="uint64"):
        shard_of(np.zeros(2, np.int32), np.zeros(2, np.int32), 4)
    with pytest.raises(ValueError, match="shape"):
        shard_of(np.zeros(2, np.uint64), np.zeros(3, np.int32), 4)
    with pytest.raises(ValueError, match="num_shards"):
        shard_of(np.zeros(2, np.uint64), np.zeros(2, np.int32), 0)
