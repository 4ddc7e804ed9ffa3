"""Which logical shard, and which server rank, owns a feature.

A feature is the pair ``(slot, key)``. Its logical shard is a fixed 64-bit mix of the pair
(the splitmix64 finaliser of ``key ^ (slot * 0x9E3779B97F4A7C15)``) modulo ``num_shards``; it never
depends on the number of server ranks, so a model saved by 2 servers loads into 8. Shard ``s``
lives on server rank ``s % num_servers``.

Everything is vectorised numpy on ``uint64`` (integer overflow wraps, as intended).

>>> import numpy as np
>>> keys = np.array([0, 1, 2**64 - 1], dtype=np.uint64)
>>> slots = np.array([0, 0, 3], dtype=np.int32)
>>> shard_of(keys, slots, 8).dtype
dtype('int32')
>>> bool(np.all(shard_of(keys, slots, 8) == shard_of(keys, slots, 8)))
True
"""

from __future__ import annotations

import numpy as np

__all__ = ["mix64", "shard_of", "server_of_shard", "shards_of_server", "group_by_owner"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)


def _as_keys(keys) -> np.ndarray:
    keys = np.asarray(keys)
    if keys.dtype == np.int64:
        return keys.view(np.uint64)
    if keys.dtype != np.uint64:
        raise ValueError(f"keys: expected uint64 (or int64, viewed bit for bit), got {keys.dtype}")
    return keys


def mix64(keys, slots) -> np.ndarray:
    """The fixed 64-bit hash of features ``(slot, key)``.

    Parameters
    ----------
    keys : ndarray of uint64 (int64 accepted, viewed bit for bit), shape (n,)
    slots : ndarray of int32 (any integer dtype accepted), shape (n,)

    Returns
    -------
    ndarray of uint64, shape (n,)

    Examples
    --------
    >>> import numpy as np
    >>> int(mix64(np.array([1], np.uint64), np.array([0], np.int32))[0])
    6238072747940578789
    """
    k = _as_keys(keys)
    s = np.asarray(slots)
    if s.shape != k.shape:
        raise ValueError(f"slots: expected shape {k.shape} (same as keys), got {s.shape}")
    # one temporary; in-place ops afterwards. Array (not scalar) arithmetic wraps silently.
    z = s.astype(np.uint64)
    z *= _GOLDEN
    z ^= k
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def shard_of(keys, slots, num_shards: int) -> np.ndarray:
    """Logical shard of each feature, ``int32[n]`` in ``[0, num_shards)``.

    Parameters
    ----------
    keys : ndarray of uint64 (or int64), shape (n,)
    slots : ndarray of int32, shape (n,)
    num_shards : int
        Fixed for the life of a model (``cfg.table_num_shards``).
    """
    if int(num_shards) < 1:
        raise ValueError(f"num_shards: expected >= 1, got {num_shards}")
    return (mix64(keys, slots) % np.uint64(num_shards)).astype(np.int32)


def server_of_shard(shard, num_servers: int):
    """Server rank (0-based among servers) holding logical shard(s) ``shard``: ``shard % num_servers``.

    >>> server_of_shard(5, 2)
    1
    """
    if int(num_servers) < 1:
        raise ValueError(f"num_servers: expected >= 1, got {num_servers}")
    return shard % num_servers


def shards_of_server(server: int, num_shards: int, num_servers: int) -> list[int]:
    """The logical shards server ``server`` (0-based among servers) holds: the inverse of
    :func:`server_of_shard`, which decides it.

    >>> shards_of_server(1, 6, 4), shards_of_server(3, 6, 4)
    ([1, 5], [3])
    """
    return [s for s in range(int(num_shards)) if server_of_shard(s, num_servers) == server]


def group_by_owner(owner, num_owners: int) -> list[np.ndarray]:
    """Split positions ``0..n-1`` by owner.

    Parameters
    ----------
    owner : ndarray of int, shape (n,)
        Owner (shard or server) of each position, in ``[0, num_owners)``.
    num_owners : int

    Returns
    -------
    list of ndarray of int64
        ``groups[o]`` are the positions owned by ``o``, in increasing order (stable), possibly empty.
        ``np.concatenate(groups)`` is a permutation of ``arange(n)``.

    Examples
    --------
    >>> import numpy as np
    >>> [g.tolist() for g in group_by_owner(np.array([1, 0, 1, 2]), 4)]
    [[1], [0, 2], [3], []]
    """
    owner = np.asarray(owner)
    if owner.ndim != 1:
        raise ValueError(f"owner: expected 1-D, got shape {owner.shape}")
    if owner.size and (owner.min() < 0 or owner.max() >= num_owners):
        raise ValueError(f"owner: values must be in [0, {num_owners}), got [{owner.min()}, {owner.max()}]")
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=num_owners) if owner.size else np.zeros(num_owners, np.int64)
    return np.split(order.astype(np.int64, copy=False), np.cumsum(counts)[:-1])
