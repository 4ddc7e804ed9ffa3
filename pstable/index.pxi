# The index (``index.pxd``) of a slab's entries: hash, probe, insert, grow, erase. Included by
# _table.pyx.

cdef enum:
    MIN_BUCKETS = 64
    REBUILD_GROUP = 16         # rows per hash-and-prefetch group of ix_rebuild


cdef inline uint64_t feat_hash(uint64_t key, int32_t slot) noexcept nogil:
    """The hash a feature is indexed by (mirrored by tests/pstable/pstable_reference.py)."""
    return pst_mix64(key ^ (<uint64_t>(<uint32_t>slot) * PST_GOLDEN) ^ PST_INDEX_SALT)


cdef inline uint32_t ix_candidate(const Index* ix, uint64_t h, uint64_t* pos_out) noexcept nogil:
    """First bucket on h's probe path whose tag matches, or the empty bucket that ends the path."""
    cdef uint64_t pos = h >> ix.shift
    cdef uint64_t tag = h & PST_HI
    cdef uint64_t b
    while True:
        b = ix.buckets[pos]
        if <uint32_t>b == PST_EMPTY or (b & PST_HI) == tag:
            pos_out[0] = pos
            return <uint32_t>b
        pos = (pos + 1) & ix.mask


cdef inline uint32_t ix_find(const Index* ix, const Slab* s, uint64_t h, uint64_t key,
                             int32_t slot, uint64_t* pos_out) noexcept nogil:
    """Row id of (key, slot), or PST_EMPTY with *pos_out the empty bucket where it would go."""
    return ix_find_from(ix, s, h >> ix.shift, h, key, slot, pos_out)


cdef inline uint32_t ix_find_from(const Index* ix, const Slab* s, uint64_t pos, uint64_t h,
                                  uint64_t key, int32_t slot, uint64_t* pos_out) noexcept nogil:
    """ix_find starting at bucket `pos` of h's probe path: valid when an earlier probe stopped at
    `pos` (first tag match or empty bucket) and ix.epoch has not changed since (buckets before
    `pos` on the path can only have filled up, never with this feature)."""
    cdef uint64_t tag = h & PST_HI
    cdef uint64_t b
    cdef RowHeader* hdr
    while True:
        b = ix.buckets[pos]
        if <uint32_t>b == PST_EMPTY:
            pos_out[0] = pos
            return PST_EMPTY
        if (b & PST_HI) == tag:
            hdr = <RowHeader*>slab_at(s, <uint32_t>b)
            if hdr.key == key and hdr.slot == slot:
                pos_out[0] = pos
                return <uint32_t>b
        pos = (pos + 1) & ix.mask


cdef inline uint32_t ix_find_resumed(const Index* ix, const Slab* s, bint resume, uint64_t from_pos,
                                     uint64_t h, uint64_t key, int32_t slot,
                                     uint64_t* pos_out) noexcept nogil:
    """ix_find, resumed at bucket `from_pos` when `resume` says ix_find_from's condition holds."""
    if resume:
        return ix_find_from(ix, s, from_pos, h, key, slot, pos_out)
    return ix_find(ix, s, h, key, slot, pos_out)


cdef inline void ix_put(Index* ix, uint64_t pos, uint64_t h, uint32_t idx) noexcept nogil:
    ix.buckets[pos] = (h & PST_HI) | idx
    ix.walk += (pos - (h >> ix.shift)) & ix.mask
    ix.size += 1
    ix.version += 1


cdef inline uint64_t shift_for(uint64_t cap) noexcept nogil:
    cdef uint64_t sh = 64
    while cap > 1:
        cap >>= 1
        sh -= 1
    return sh


cdef int ix_rebuild(Index* ix, const Slab* s, uint64_t cap, uint64_t* oom) noexcept nogil:
    """Replace the buckets by `cap` fresh ones holding every row of the slab (rows may have moved).
    0, or -1 on OOM."""
    cdef uint64_t* nb = <uint64_t*>pst_big_alloc(cap * sizeof(uint64_t))
    cdef uint64_t mask = cap - 1
    cdef uint64_t shift = shift_for(cap)
    cdef uint64_t hs[REBUILD_GROUP]
    cdef uint64_t i, j, m, pos, h
    cdef RowHeader* hdr
    if nb == NULL:
        oom[0] = cap * sizeof(uint64_t)
        return -1
    memset(nb, 0xFF, cap * sizeof(uint64_t))
    i = 0
    while i < s.size:
        m = s.size - i if s.size - i < REBUILD_GROUP else REBUILD_GROUP
        for j in range(m):
            hdr = <RowHeader*>slab_at(s, i + j)
            h = feat_hash(hdr.key, hdr.slot)
            hs[j] = h
            pst_prefetch_w(&nb[h >> shift])
        for j in range(m):
            pos = hs[j] >> shift
            while <uint32_t>nb[pos] != PST_EMPTY:
                pos = (pos + 1) & mask
            nb[pos] = (hs[j] & PST_HI) | <uint32_t>(i + j)
        i += m
    free(ix.buckets)
    ix.buckets = nb
    ix.mask = mask
    ix.shift = shift
    ix.size = s.size
    ix.version += 1
    ix.epoch += 1
    return 0


cdef int ix_grow(Index* ix, uint64_t cap, uint64_t* oom) noexcept nogil:
    """Rehash into `cap` buckets from the old buckets alone: the home is in the tag, and old
    buckets in order land almost in order (no row is read, writes are near-sequential)."""
    cdef uint64_t* nb = <uint64_t*>pst_big_alloc(cap * sizeof(uint64_t))
    cdef uint64_t mask = cap - 1
    cdef uint64_t shift = shift_for(cap)
    cdef uint64_t j, b, pos
    if nb == NULL:
        oom[0] = cap * sizeof(uint64_t)
        return -1
    memset(nb, 0xFF, cap * sizeof(uint64_t))
    for j in range(ix.mask + 1):
        b = ix.buckets[j]
        if <uint32_t>b == PST_EMPTY:
            continue
        pos = (b & PST_HI) >> shift
        while <uint32_t>nb[pos] != PST_EMPTY:
            pos = (pos + 1) & mask
        nb[pos] = b
    free(ix.buckets)
    ix.buckets = nb
    ix.mask = mask
    ix.shift = shift
    ix.version += 1
    ix.epoch += 1
    return 0


cdef inline uint64_t ix_capacity_for(uint64_t n) noexcept nogil:
    """Smallest power of two >= MIN_BUCKETS keeping the load factor <= 3/4."""
    cdef uint64_t cap = MIN_BUCKETS
    while n * 4 > cap * 3:
        cap *= 2
    return cap


cdef dict ix_stats(const Index* ix):
    cdef uint64_t j, b, d, total = 0, worst = 0
    for j in range(ix.mask + 1):
        b = ix.buckets[j]
        if <uint32_t>b != PST_EMPTY:
            d = (j - ((b & PST_HI) >> ix.shift)) & ix.mask
            total += d
            worst = d if d > worst else worst
    return dict(buckets=int(ix.mask + 1), entries=int(ix.size),
                mean_probe=<double>total / ix.size if ix.size else 0.0, max_probe=int(worst),
                insert_walk=int(ix.walk))


cdef int ix_grow_for_pass(Index* ix, uint64_t size0, uint64_t done, uint64_t of,
                          uint64_t* oom) noexcept nogil:
    """Grow ahead of a pass that inserts in hash order (push's apply): it fills the index front
    to back, so the part already passed holds the entries of the whole pass. Growth only at 3/4
    of the whole would let that part fill up completely and every later insert walk its cluster
    (quadratic). Given the pass covered `done` of `of` hash-ordered records and the index held
    `size0` entries at its start, grow now to the capacity for the projected final size. 0, or
    -1 on OOM."""
    cdef uint64_t added = ix.size - size0 if ix.size > size0 else 0
    cdef uint64_t cap
    if added < 256 or done == 0:                # too few to project; a small cluster is harmless
        return 0
    cap = ix_capacity_for(size0 + <uint64_t>(<double>added * of / done))
    if cap <= ix.mask + 1:
        return 0
    return ix_grow(ix, cap, oom)


cdef inline char* entry_append(Index* ix, Slab* s, uint64_t h, uint64_t key, int32_t slot,
                               uint64_t* pos, uint64_t* oom) noexcept nogil:
    """Add (key, slot), which ix_find just missed at bucket `pos`: grow the index when full (then
    find the bucket again), append to the slab and index it. NULL when memory ran out."""
    cdef char* p
    if (ix.size + 1) * 4 > (ix.mask + 1) * 3:
        if ix_grow(ix, (ix.mask + 1) * 2, oom) != 0:
            return NULL
        ix_find(ix, s, h, key, slot, pos)
    p = slab_push(s, oom)
    if p != NULL:
        ix_put(ix, pos[0], h, <uint32_t>(s.size - 1))
    return p


cdef inline char* entry_upsert(Index* ix, Slab* s, uint32_t r, uint64_t h, uint64_t key,
                               int32_t slot, uint64_t* pos, uint64_t* oom) noexcept nogil:
    """Entry r that ix_find returned for (key, slot), or a new one if it returned PST_EMPTY (with
    *pos the bucket where it stopped). NULL when memory ran out."""
    if r == PST_EMPTY:
        return entry_append(ix, s, h, key, slot, pos, oom)
    return slab_at(s, r)


cdef void ix_erase(Index* ix, const Slab* s, uint64_t pos) noexcept nogil:
    """Empty bucket `pos` and shift later entries of its cluster back (no tombstones)."""
    cdef uint64_t mask = ix.mask
    cdef uint64_t i = pos, j = pos, b, home
    ix.buckets[i] = PST_EMPTY_BUCKET
    while True:
        j = (j + 1) & mask
        b = ix.buckets[j]
        if <uint32_t>b == PST_EMPTY:
            break
        home = (b & PST_HI) >> ix.shift
        if ((j - home) & mask) >= ((j - i) & mask):
            ix.buckets[i] = b
            ix.buckets[j] = PST_EMPTY_BUCKET
            i = j
    ix.size -= 1
    ix.version += 1
    ix.epoch += 1


cdef uint32_t entry_remove(Index* ix, Slab* s, uint64_t pos, uint32_t idx) noexcept nogil:
    """Remove row `idx` (found at bucket `pos`): the last row moves into its place.

    Returns the old id of the moved row (now at `idx`), or PST_EMPTY if none moved.
    """
    cdef uint64_t last = s.size - 1
    cdef char* src
    cdef RowHeader* hdr
    cdef uint64_t p
    ix_erase(ix, s, pos)
    if idx == last:
        s.size -= 1
        return PST_EMPTY
    src = slab_at(s, last)
    memcpy(slab_at(s, idx), src, s.stride)
    hdr = <RowHeader*>src
    p = feat_hash(hdr.key, hdr.slot) >> ix.shift
    while <uint32_t>ix.buckets[p] != <uint32_t>last:
        p = (p + 1) & ix.mask
    ix.buckets[p] = (ix.buckets[p] & PST_HI) | idx
    s.size -= 1
    return <uint32_t>last


# -- a filter of entries: a few bits per entry, no false negatives (load's pending filter) ---------

cdef inline uint64_t filter_bits(uint64_t h) noexcept nogil:
    """The 2 bits of feature hash h in its word of _load's pending filter."""
    return ((<uint64_t>1) << ((h >> 32) & 63)) | ((<uint64_t>1) << ((h >> 38) & 63))


cdef inline bint maybe_in(const uint64_t* filt, uint64_t fmask, uint64_t h) noexcept nogil:
    cdef uint64_t m = filter_bits(h)
    return (filt[h & fmask] & m) == m
