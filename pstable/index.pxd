# cython: language_level=3
"""The index: open addressing, linear probing, load factor <= 3/4, no tombstones.

A bucket is one ``uint64``: high 32 bits = tag (high half of the feature hash), low 32 bits = row
id, ``PST_EMPTY`` = empty (the empty marker is in the row-id half, so every 64-bit key is valid).
The home bucket is the top log2(capacity) bits of the hash, hence of the tag: growth and
deletion never read rows. The functions are in ``index.pxi``.
"""

from libc.stdint cimport uint64_t


cdef struct Index:
    uint64_t* buckets           # (tag << 32) | row id; row id PST_EMPTY = empty
    uint64_t mask               # capacity - 1 (capacity is a power of two, 2^6 .. 2^32)
    uint64_t shift              # 64 - log2(capacity): home bucket = hash >> shift, so the home of
                                # an entry is also (tag << 32) >> shift: growth and deletion never
                                # read rows
    uint64_t size               # occupied buckets (= rows in the slab)
    uint64_t version            # bumped on every insert, erase or rehash (invalidates probe results)
    uint64_t epoch              # bumped on every erase or rehash only: while it is unchanged, buckets
                                # only fill up, so a probe may resume where an earlier one stopped
    uint64_t walk               # buckets walked past the home by all inserts (probe-path health)
