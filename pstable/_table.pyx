# cython: language_level=3
"""The sparse parameter table: pull, push (admission + optimizer), end_day (decay + eviction),
export / load. See ``_table.pxd`` for the row layout and ``docs/pstable.md`` for the contract.

Hot paths (pull, push, load, rehash) are single ``with nogil:`` loops over raw pointers taken from
typed memoryviews, processing keys in groups with software prefetch:
hash a group and prefetch its buckets, probe the previous group and prefetch its rows, then
gather / update the group before that (a three-stage pipeline over groups of ``GROUP`` keys).
Push first merges duplicates in a push-local table (no row read), then touches each unique
feature's row once (see ``_push``).
"""

from collections import namedtuple

import numpy as np

from libc.math cimport isfinite, sqrt
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

from pstable.config import (AdmissionPolicy, OptimizerRule, TableConfig,
                            opt_state_width)

# Inline C: prefetch hints, the 64-bit mixer and the constants that must not be Python ints.
cdef extern from *:
    """
    #include <stdint.h>
    #define PST_EMPTY ((uint32_t)0xFFFFFFFFu)
    #define PST_HI ((uint64_t)0xFFFFFFFF00000000ull)
    #define PST_GOLDEN ((uint64_t)0x9E3779B97F4A7C15ull)
    /* salts: the index hash must not correlate with trainer.sharding.mix64 (same finaliser) */
    #define PST_INDEX_SALT ((uint64_t)0x5851F42D4C957F2Dull)
    #define PST_INIT_SALT ((uint64_t)0x243F6A8885A308D3ull)
    #define PST_ADMIT_SALT ((uint64_t)0x13198A2E03707344ull)
    #define PST_CHUNK_SHIFT 14
    #define PST_CHUNK_ROWS ((uint64_t)1 << PST_CHUNK_SHIFT)
    #define PST_CHUNK_MASK (PST_CHUNK_ROWS - 1)
    #ifdef PSTABLE_DEBUG  /* STREAMTRAIN_DEBUG=1 build: check row ids in the raw-pointer loops */
    #include <stdio.h>
    #include <stdlib.h>
    #define PST_CHECK(cond) do { if (!(cond)) { fprintf(stderr, "pstable: check failed: %s (%s:%d)\\n", \
                                                       #cond, __FILE__, __LINE__); abort(); } } while (0)
    #else
    #define PST_CHECK(cond) ((void)0)
    #endif
    #include <math.h>
    #include <stdlib.h>
    #include <sys/mman.h>
    /* 2 MiB aligned and advised as transparent huge pages when that big; free() releases it */
    static inline void *pst_big_alloc(size_t bytes) {
        void *p = NULL;
        if (bytes >= ((size_t)2 << 20)) {
            if (posix_memalign(&p, (size_t)2 << 20, bytes) != 0) return NULL;
    #ifdef MADV_HUGEPAGE
            madvise(p, bytes, MADV_HUGEPAGE);
    #endif
            return p;
        }
        return malloc(bytes);
    }
    /* small row copies / sums: restrict lets the compiler vectorise. gcc turns a copy or
       zeroing loop (even a scalar tail loop) into a memcpy / memset call per row; this SSE copy
       (4 floats at a time, the last 4 again, overlapping; rows narrower than 4 by halves) makes
       no call. Measured no faster than the call (a Zipf pull's memcpy samples were the row's
       cache misses): it is the one copy helper of pull, push and load */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline void pst_copy(float *restrict dst, const float *restrict src, int n) {
        if (n >= 4) {
            for (int j = 0; j + 4 < n; j += 4) _mm_storeu_ps(dst + j, _mm_loadu_ps(src + j));
            _mm_storeu_ps(dst + n - 4, _mm_loadu_ps(src + n - 4));
            return;
        }
        if (n & 2) _mm_storel_pi((__m64 *)dst, _mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)src));
        if (n & 1) _mm_store_ss(dst + n - 1, _mm_load_ss(src + n - 1));
    }
    static inline void pst_zero(float *restrict dst, int n) {
        if (n >= 4) {
            for (int j = 0; j + 4 < n; j += 4) _mm_storeu_ps(dst + j, _mm_setzero_ps());
            _mm_storeu_ps(dst + n - 4, _mm_setzero_ps());
            return;
        }
        if (n & 2) _mm_storel_pi((__m64 *)dst, _mm_setzero_ps());
        if (n & 1) _mm_store_ss(dst + n - 1, _mm_setzero_ps());
    }
    #else
    static inline void pst_copy(float *restrict dst, const float *restrict src, int n) {
        for (int j = 0; j < n; j++) dst[j] = src[j];
    }
    static inline void pst_zero(float *restrict dst, int n) {
        for (int j = 0; j < n; j++) dst[j] = 0.0f;
    }
    #endif
    static inline void pst_add(float *restrict dst, const float *restrict src, int n) {
        for (int j = 0; j < n; j++) dst[j] = dst[j] + src[j];
    }
    /* the adagrad rule on one row, exactly the operations (and their order) of the reference;
       plain C with restrict so the weight loop vectorises and the clip compiles to min/max */
    static inline void pst_adagrad(float *restrict w, float *restrict st, const float *restrict g,
                                   int W, double div, double lr, double g2init, double bounds,
                                   double dim) {
        double scale = sqrt(g2init / (g2init + st[0]));
        double g0 = (double)g[0] / div;
        double x = (double)w[0] - lr * g0 * scale;
        x = x > bounds ? bounds : x;
        x = x < -bounds ? -bounds : x;
        w[0] = (float)x;
        st[0] = (float)((double)st[0] + g0 * g0);
        scale = sqrt(g2init / (g2init + st[1]));
        for (int j = 1; j < W; j++) {
            double y = (double)w[j] - lr * ((double)g[j] / div) * scale;
            y = y > bounds ? bounds : y;
            y = y < -bounds ? -bounds : y;
            w[j] = (float)y;
        }
        double acc = 0.0;
        for (int j = 1; j < W; j++) acc += ((double)g[j] / div) * ((double)g[j] / div);
        st[1] = (float)((double)st[1] + acc / dim);
    }
    static inline void pst_prefetch_r(const void *p) { __builtin_prefetch(p, 0, 3); }
    static inline void pst_prefetch_w(const void *p) { __builtin_prefetch(p, 1, 3); }
    /* splitmix64 finaliser */
    static inline uint64_t pst_mix64(uint64_t z) {
        z = (z ^ (z >> 30)) * (uint64_t)0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * (uint64_t)0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    """
    uint32_t PST_EMPTY
    uint64_t PST_HI
    uint64_t PST_GOLDEN
    uint64_t PST_INDEX_SALT
    uint64_t PST_INIT_SALT
    uint64_t PST_ADMIT_SALT
    int PST_CHUNK_SHIFT
    uint64_t PST_CHUNK_ROWS
    uint64_t PST_CHUNK_MASK
    void pst_adagrad(float* w, float* st, const float* g, int W, double div, double lr,
                     double g2init, double bounds, double dim) noexcept nogil
    void pst_prefetch_r(const void *p) noexcept nogil
    void pst_prefetch_w(const void *p) noexcept nogil
    uint64_t pst_mix64(uint64_t z) noexcept nogil
    void PST_CHECK(bint cond) noexcept nogil
    void* pst_big_alloc(size_t bytes) noexcept nogil
    void pst_copy(float* dst, const float* src, int n) noexcept nogil
    void pst_zero(float* dst, int n) noexcept nogil
    void pst_add(float* dst, const float* src, int n) noexcept nogil

cdef enum:
    GROUP = 16                 # keys per pipeline stage of push and rehash
    PULL_GROUP = 32            # keys per pipeline stage of pull (measured: longer prefetch distance pays)
    LOAD_GROUP = 64            # entries per pipeline stage of load
    HEADER_BYTES = 28          # sizeof the RowHeader fields (the struct itself pads to 32)
    MIN_BUCKETS = 64
    RULE_SGD = 0
    RULE_ADAGRAD = 1
    RULE_ADAM = 2
    POLICY_NONE = 0
    POLICY_COUNT = 1
    POLICY_PROB = 2
    POLICY_SHOW_CLICK = 3
    STATE_ROW = 0
    STATE_PENDING = 1
    STATE_TOMBSTONE = 2

CHUNK_ROWS = PST_CHUNK_ROWS
HEADER_SIZE = HEADER_BYTES


# --------------------------------------------------------------------------------------------
# hashing and initial values (mirrored bit for bit by tests/pstable/reference.py)
# --------------------------------------------------------------------------------------------

cdef inline uint64_t feat_hash(uint64_t key, int32_t slot) noexcept nogil:
    return pst_mix64(key ^ (<uint64_t>(<uint32_t>slot) * PST_GOLDEN) ^ PST_INDEX_SALT)


cdef inline double admit_draw(uint64_t h, uint64_t admit_mix, int32_t hour) noexcept nogil:
    cdef uint64_t v = pst_mix64(pst_mix64(h ^ admit_mix) + <uint64_t>(<uint32_t>hour) * PST_GOLDEN)
    return <double>(v >> 11) * (1.0 / 9007199254740992.0)


cdef inline void init_values(float* w, float* st, int dim, int k, int rule, uint64_t h,
                             uint64_t init_mix, double r, double beta1, double beta2) noexcept nogil:
    cdef uint64_t base = pst_mix64(h ^ init_mix)
    cdef int i
    cdef double u
    w[0] = 0.0
    for i in range(dim):
        u = <double>(pst_mix64(base + <uint64_t>(i + 1) * PST_GOLDEN) >> 40) * (1.0 / 16777216.0)
        w[1 + i] = <float>((2.0 * u - 1.0) * r)
    for i in range(k):
        st[i] = 0.0
    if rule == RULE_ADAM:
        st[k - 2] = <float>beta1
        st[k - 1] = <float>beta2


cdef inline float clip(double x, double b) noexcept nogil:
    if x > b:
        return <float>b
    if x < -b:
        return <float>(-b)
    return <float>x


# --------------------------------------------------------------------------------------------
# slab: rows in fixed-size chunks
# --------------------------------------------------------------------------------------------

cdef inline char* slab_at(const Slab* s, uint64_t i) noexcept nogil:
    PST_CHECK(i < s.size)
    return s.chunks[i >> PST_CHUNK_SHIFT] + (i & PST_CHUNK_MASK) * s.stride


cdef inline void prefetch_bytes_w(const char* p, uint64_t nbytes) noexcept nogil:
    cdef uint64_t off = 0
    while off < nbytes:
        pst_prefetch_w(p + off)
        off += 64
    pst_prefetch_w(p + nbytes - 1)


cdef inline void prefetch_row_w(const Slab* s, uint64_t i) noexcept nogil:
    prefetch_bytes_w(slab_at(s, i), s.stride)


cdef inline void prefetch_bytes_r(const char* p, uint64_t nbytes) noexcept nogil:
    cdef uint64_t off = 0
    while off < nbytes:
        pst_prefetch_r(p + off)
        off += 64
    pst_prefetch_r(p + nbytes - 1)


cdef inline void prefetch_row_r(const Slab* s, uint64_t i, uint64_t nbytes) noexcept nogil:
    prefetch_bytes_r(slab_at(s, i), nbytes)


cdef char* slab_append(Slab* s, uint64_t* oom) noexcept nogil:
    """Room for one more row at index s.size (s.size is bumped); NULL on allocation failure."""
    cdef uint64_t i = s.size
    cdef uint64_t c = i >> PST_CHUNK_SHIFT
    cdef uint64_t ncap, nb, nbytes
    cdef uint64_t chunk_bytes = PST_CHUNK_ROWS * s.stride
    cdef char** nchunks
    cdef char** nblocks
    cdef uint64_t* nbc
    cdef char* block
    if i >= <uint64_t>PST_EMPTY:
        oom[0] = 0xFFFFFFFF
        return NULL
    if c >= s.n_chunks:
        if s.n_chunks == s.cap_chunks:
            ncap = s.cap_chunks * 2 if s.cap_chunks else 8
            nchunks = <char**>realloc(s.chunks, ncap * sizeof(char*))
            if nchunks == NULL:
                oom[0] = ncap * sizeof(char*)
                return NULL
            s.chunks = nchunks
            s.cap_chunks = ncap
        if s.spare == 0:
            if s.n_blocks == s.cap_blocks:
                ncap = s.cap_blocks * 2 if s.cap_blocks else 8
                nblocks = <char**>realloc(s.blocks, ncap * sizeof(char*))
                if nblocks == NULL:
                    oom[0] = ncap * sizeof(char*)
                    return NULL
                s.blocks = nblocks
                nbc = <uint64_t*>realloc(s.block_chunks, ncap * sizeof(uint64_t))
                if nbc == NULL:
                    oom[0] = ncap * sizeof(uint64_t)
                    return NULL
                s.block_chunks = nbc
                s.cap_blocks = ncap
            nb = s.n_chunks // 8
            nb = 1 if nb < 1 else (16 if nb > 16 else nb)
            nbytes = nb * chunk_bytes
            block = <char*>pst_big_alloc(nbytes)
            if block == NULL:
                oom[0] = nbytes
                return NULL
            s.blocks[s.n_blocks] = block
            s.block_chunks[s.n_blocks] = nb
            s.n_blocks += 1
            s.spare = nb
            s.alloc_bytes += nbytes
        nb = s.block_chunks[s.n_blocks - 1]
        s.chunks[s.n_chunks] = s.blocks[s.n_blocks - 1] + (nb - s.spare) * chunk_bytes
        s.spare -= 1
        s.n_chunks += 1
    s.size += 1
    return slab_at(s, i)


cdef inline char* slab_push(Slab* s, uint64_t* oom) noexcept nogil:
    """slab_append, inlined while the last chunk has room (the common case)."""
    cdef uint64_t i = s.size
    if (i >> PST_CHUNK_SHIFT) < s.n_chunks and i < <uint64_t>PST_EMPTY:
        s.size = i + 1
        return slab_at(s, i)
    return slab_append(s, oom)


cdef void slab_trim(Slab* s) noexcept nogil:
    """Give back chunks no row uses any more (whole trailing blocks are freed)."""
    cdef uint64_t need = (s.size + PST_CHUNK_ROWS - 1) >> PST_CHUNK_SHIFT
    cdef uint64_t used_last
    while s.n_blocks > 0:
        used_last = s.block_chunks[s.n_blocks - 1] - s.spare
        if s.n_chunks - used_last < need:
            break
        s.n_chunks -= used_last
        s.n_blocks -= 1
        s.alloc_bytes -= s.block_chunks[s.n_blocks] * PST_CHUNK_ROWS * s.stride
        free(s.blocks[s.n_blocks])
        s.spare = 0
    if s.n_chunks > need:
        s.spare += s.n_chunks - need
        s.n_chunks = need


cdef void slab_free(Slab* s) noexcept nogil:
    cdef uint64_t b
    for b in range(s.n_blocks):
        free(s.blocks[b])
    free(s.blocks)
    free(s.block_chunks)
    free(s.chunks)
    s.blocks = NULL
    s.block_chunks = NULL
    s.chunks = NULL
    s.n_blocks = s.cap_blocks = s.spare = s.alloc_bytes = 0
    s.n_chunks = s.cap_chunks = s.size = 0


# --------------------------------------------------------------------------------------------
# index: open addressing, linear probing, tags
# --------------------------------------------------------------------------------------------

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
    cdef uint64_t hs[GROUP]
    cdef uint64_t i, j, m, pos, h
    cdef RowHeader* hdr
    if nb == NULL:
        oom[0] = cap * sizeof(uint64_t)
        return -1
    memset(nb, 0xFF, cap * sizeof(uint64_t))
    i = 0
    while i < s.size:
        m = s.size - i if s.size - i < GROUP else GROUP
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


cdef inline uint64_t filter_bits(uint64_t h) noexcept nogil:
    """The 2 bits of feature hash h in its word of _load's pending filter."""
    return ((<uint64_t>1) << ((h >> 32) & 63)) | ((<uint64_t>1) << ((h >> 38) & 63))


cdef inline bint maybe_in(const uint64_t* filt, uint64_t fmask, uint64_t h) noexcept nogil:
    cdef uint64_t m = filter_bits(h)
    return (filt[h & fmask] & m) == m


cdef inline void header_set(RowHeader* hdr, uint64_t key, int32_t slot, float show, float click,
                            int32_t last_seen) noexcept nogil:
    """Fill a new or loaded entry's header, not marked changed (loaded: not changed since the
    last save; new: the caller marks it once it is trained)."""
    hdr.key = key
    hdr.slot = slot
    hdr.show = show
    hdr.click = click
    hdr.last_seen = last_seen
    hdr.mark = 0


cdef void ix_erase(Index* ix, const Slab* s, uint64_t pos) noexcept nogil:
    """Empty bucket `pos` and shift later entries of its cluster back (no tombstones)."""
    cdef uint64_t mask = ix.mask
    cdef uint64_t i = pos, j = pos, b, home
    ix.buckets[i] = 0xFFFFFFFFFFFFFFFF
    while True:
        j = (j + 1) & mask
        b = ix.buckets[j]
        if <uint32_t>b == PST_EMPTY:
            break
        home = (b & PST_HI) >> ix.shift
        if ((j - home) & mask) >= ((j - i) & mask):
            ix.buckets[i] = b
            ix.buckets[j] = 0xFFFFFFFFFFFFFFFF
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


# --------------------------------------------------------------------------------------------
# argument checks (Python level, before anything changes)
# --------------------------------------------------------------------------------------------

cdef object _check_keys(object keys):
    if not isinstance(keys, np.ndarray):
        raise ValueError(f"keys: expected a numpy array of uint64 (or int64), got {type(keys).__name__}")
    if keys.dtype == np.int64:
        keys = keys.view(np.uint64)
    elif keys.dtype != np.uint64:
        raise ValueError(f"keys: expected dtype uint64 (or int64, viewed bit for bit), got {keys.dtype}")
    if keys.ndim != 1:
        raise ValueError(f"keys: expected a 1-D array, got shape {keys.shape}")
    if not keys.flags.c_contiguous:
        raise ValueError(f"keys: expected a C-contiguous array, got strides {keys.strides}")
    if keys.shape[0] > 2**31 - 2:
        raise ValueError(f"keys: expected at most {2**31 - 2} keys per call, got {keys.shape[0]}")
    return keys


cdef object _check_vec(str name, object a, object dtype, Py_ssize_t n):
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array of {np.dtype(dtype)}, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) (one per key), got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array, got strides {a.strides}")
    return a


cdef object _check_mat(str name, object a, Py_ssize_t n, Py_ssize_t w, str what):
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array of float32, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise ValueError(f"{name}: expected dtype float32, got {a.dtype}")
    if a.ndim != 2 or a.shape[0] != n or a.shape[1] != w:
        raise ValueError(f"{name}: expected shape ({n}, {w}) ({what}), got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array, got strides {a.strides}")
    return a


cdef int32_t _check_hour(object hour) except? -1:
    if isinstance(hour, (bool, np.bool_)) or not isinstance(hour, (int, np.integer)):
        raise ValueError(f"hour: expected an integer hour index, got {hour!r}")
    if not -2**31 <= int(hour) < 2**31:
        raise ValueError(f"hour: expected an int32 hour index, got {hour!r}")
    return <int32_t>int(hour)


cdef Py_ssize_t _first_bad(const float* p, Py_ssize_t n, bint nonneg) noexcept nogil:
    """Index of the first non-finite (or, if nonneg, negative) value, or -1.

    A branch-free pass over the bit patterns (vectorised by the compiler) finds whether there is
    one; only then a second pass finds where. -0.0 counts as non-negative.
    """
    cdef const uint32_t* b = <const uint32_t*>p
    cdef uint32_t acc = 0
    cdef Py_ssize_t i
    if nonneg:
        for i in range(n):
            acc |= ((b[i] & 0x7F800000u) == 0x7F800000u) | (b[i] > 0x80000000u)
    else:
        for i in range(n):
            acc |= (b[i] & 0x7F800000u) == 0x7F800000u
    if not acc:
        return -1
    for i in range(n):
        if not isfinite(p[i]) or (nonneg and p[i] < 0):
            return i
    return -1


PushResult = namedtuple("PushResult", ["created", "filtered", "updated"])
PushResult.__doc__ = """What one push did, counted over its unique features: ``created`` rows,
``filtered`` (seen, not admitted: counters kept as pending) and ``updated`` (existing rows trained)."""


EXPORT_COLUMNS = ("key", "slot", "state", "show", "click", "last_seen", "weights", "opt_state")


cdef class SparseTable:
    """A sparse parameter table keyed by the feature ``(slot int32, key uint64)``.

    Parameters
    ----------
    config : TableConfig

    Examples
    --------
    >>> import numpy as np
    >>> from pstable import SparseTable, TableConfig
    >>> t = SparseTable(TableConfig(dim=4))
    >>> keys = np.array([7, 2**64 - 1, 7], dtype=np.uint64)
    >>> slots = np.zeros(3, np.int32)
    >>> ones = np.ones(3, np.float32)
    >>> t.push(keys, slots, ones, 0 * ones, np.zeros((3, 5), np.float32), hour=10)
    PushResult(created=2, filtered=0, updated=0)
    >>> len(t), t.pull(keys, slots).shape
    (2, (3, 5))
    """

    def __init__(self, config):
        if self.config is not None:
            raise RuntimeError("SparseTable: already initialised (make a new table instead)")
        if isinstance(config, dict):
            config = TableConfig(**config)
        if not isinstance(config, TableConfig):
            raise ValueError(f"config: expected a pstable.TableConfig, got {type(config).__name__}")
        opt = config.optimizer
        adm = config.admission
        self.config = config
        self.dim = config.dim
        self.width = 1 + config.dim
        self.k = opt_state_width(opt.rule, config.dim)
        self.rule = {OptimizerRule.SGD: RULE_SGD, OptimizerRule.ADAGRAD: RULE_ADAGRAD,
                     OptimizerRule.ADAM: RULE_ADAM}[opt.rule]
        self.policy = {AdmissionPolicy.NONE: POLICY_NONE, AdmissionPolicy.COUNT_FILTER: POLICY_COUNT,
                       AdmissionPolicy.PROBABILITY: POLICY_PROB,
                       AdmissionPolicy.SHOW_CLICK: POLICY_SHOW_CLICK}[adm.policy]
        cdef uint64_t seed = <uint64_t>int(config.seed)
        self.init_mix = pst_mix64(seed ^ PST_INIT_SALT)
        self.admit_mix = pst_mix64(seed ^ PST_ADMIT_SALT)
        self.lr = opt.learning_rate
        self.init_range = opt.initial_range
        self.bounds = opt.weight_bounds
        self.g2init = opt.initial_g2sum
        self.beta1 = opt.beta1
        self.beta2 = opt.beta2
        self.eps = opt.epsilon
        self.show_scale = opt.show_scale
        self.count_min = adm.count
        self.prob = adm.probability
        self.threshold = adm.threshold
        self.nonclk = config.nonclk_coeff
        self.clk = config.click_coeff
        self.decay = config.show_click_decay_rate
        self.del_threshold = config.delete_threshold
        self.del_days = config.delete_after_unseen_days
        self.rows.stride = ((HEADER_BYTES + 4 * (self.width + self.k)) + 7) // 8 * 8
        self.merge_stride = (sizeof(MergeHeader) + 4 * self.width + 7) // 8 * 8
        self.pend.stride = 32
        self.tomb_keys = []
        self.tomb_slots = []
        cdef uint64_t oom = 0
        if (ix_rebuild(&self.rows_ix, &self.rows, MIN_BUCKETS, &oom) != 0
                or ix_rebuild(&self.pend_ix, &self.pend, MIN_BUCKETS, &oom) != 0):
            raise MemoryError(f"pstable: could not allocate {oom} bytes for the index")

    def __dealloc__(self):
        slab_free(&self.rows)
        slab_free(&self.pend)
        free(self.rows_ix.buckets)
        free(self.pend_ix.buckets)
        free(self.scratch)

    # ----------------------------------------------------------------------------------------
    # small accessors
    # ----------------------------------------------------------------------------------------

    def __len__(self):
        return self.rows.size

    @property
    def num_pending(self):
        """Features seen but not yet admitted (their counters are kept and saved)."""
        return self.pend.size

    @property
    def row_bytes(self):
        """Bytes one admitted row takes in the slab (header, weights, opt_state, padding)."""
        return self.rows.stride

    @property
    def payload_bytes(self):
        """Raw bytes of one row's saved fields: key 8, slot 4, show 4, click 4, last_seen 4,
        weights 4*(1+dim), opt_state 4*k."""
        return 24 + 4 * (self.width + self.k)

    def memory_bytes(self):
        """Bytes allocated by this table: row chunks, indexes, push scratch, tombstones."""
        cdef uint64_t total = 0
        total += self.rows.alloc_bytes + self.rows.cap_chunks * 8 + self.rows.cap_blocks * 16
        total += self.pend.alloc_bytes + self.pend.cap_chunks * 8 + self.pend.cap_blocks * 16
        total += (self.rows_ix.mask + 1) * 8 + (self.pend_ix.mask + 1) * 8
        total += self.scratch_bytes
        for a in self.tomb_keys:
            total += a.nbytes
        for a in self.tomb_slots:
            total += a.nbytes
        return int(total)

    def memory_breakdown(self):
        """dict of allocated bytes: rows, rows_index, pending, pending_index, scratch, tombstones."""
        return dict(
            rows=int(self.rows.alloc_bytes + self.rows.cap_chunks * 8 + self.rows.cap_blocks * 16),
            rows_index=int((self.rows_ix.mask + 1) * 8),
            pending=int(self.pend.alloc_bytes + self.pend.cap_chunks * 8 + self.pend.cap_blocks * 16),
            pending_index=int((self.pend_ix.mask + 1) * 8),
            scratch=int(self.scratch_bytes),
            tombstones=int(sum(a.nbytes for a in self.tomb_keys) + sum(a.nbytes for a in self.tomb_slots)),
        )

    def index_stats(self):
        """Health of the two indexes (rows, pending): dict of buckets, entries, mean and max
        probe (buckets an entry sits past its home; linear probing at load <= 3/4 keeps the mean
        near 1) and insert_walk (buckets walked past the home by all inserts so far)."""
        return dict(rows=ix_stats(&self.rows_ix), pending=ix_stats(&self.pend_ix))

    def release_scratch(self):
        """Free the per-push buffers (they are re-allocated by the next push)."""
        self._enter()
        free(self.scratch)
        self.scratch = NULL
        self.scratch_bytes = 0
        self.scratch_rows = 0
        self.merge_ix = NULL
        self.merged = NULL
        self.busy = False

    def counters(self):
        """Totals since construction: created, filtered, updated, evicted (rows), evicted_pending.

        ``filtered`` and ``updated`` count unique features per push (a feature filtered in three
        pushes counts three times)."""
        return dict(created=int(self.n_created), filtered=int(self.n_filtered),
                    updated=int(self.n_updated), evicted=int(self.n_evicted),
                    evicted_pending=int(self.n_evicted_pending))

    def __repr__(self):
        return (f"SparseTable(rows={self.rows.size}, pending={self.pend.size}, dim={self.dim}, "
                f"rule={self.config.optimizer.rule!s}, admission={self.config.admission.policy!s})")

    cdef _enter(self):
        if self.busy:
            raise RuntimeError("SparseTable: another call is running on this table "
                               "(a table is not thread-safe; serialise calls)")
        self.busy = True

    cdef _raise_oom(self, str what):
        raise MemoryError(f"pstable: could not allocate {self.oom_bytes} bytes for {what}")

    def reserve(self, n):
        """Make room for `n` admitted rows (index and slab chunks) so the next inserts never rehash."""
        cdef uint64_t want = int(n)
        cdef uint64_t cap = ix_capacity_for(want)
        cdef uint64_t save
        cdef int rc = 0
        self._enter()
        try:
            with nogil:
                if cap > self.rows_ix.mask + 1:
                    rc = ix_grow(&self.rows_ix, cap, &self.oom_bytes)
                if rc == 0:
                    save = self.rows.size
                    while rc == 0 and self.rows.n_chunks * PST_CHUNK_ROWS < want:
                        self.rows.size = self.rows.n_chunks * PST_CHUNK_ROWS
                        if slab_append(&self.rows, &self.oom_bytes) == NULL:
                            rc = -1
                    self.rows.size = save
            if rc != 0:
                self._raise_oom("reserve")
        finally:
            self.busy = False

    # ----------------------------------------------------------------------------------------
    # pull
    # ----------------------------------------------------------------------------------------

    def pull(self, keys, slots=None, out=None):
        """Weights of features: float32 [n, 1+dim] (col 0 = w, then the embedding).

        Unknown and pending features read as zeros; nothing is created. ``slots=None`` means
        all slot 0. ``out`` (float32 [n, 1+dim], C-contiguous) is filled and returned if given.
        """
        keys = _check_keys(keys)
        cdef Py_ssize_t n = keys.shape[0]
        if slots is None:
            slots = np.zeros(n, np.int32)
        slots = _check_vec("slots", slots, np.int32, n)
        if out is None:
            out = np.empty((n, self.width), np.float32)
        else:
            out = _check_mat("out", out, n, self.width, "1 + dim columns")
            if not out.flags.writeable:
                raise ValueError("out: expected a writeable array")
        if n == 0:
            return out
        cdef const uint64_t[::1] kv = keys
        cdef const int32_t[::1] sv = slots
        cdef float[:, ::1] ov = out
        self._enter()
        try:
            with nogil:
                self._pull(&kv[0], &sv[0], &ov[0, 0], n)
        finally:
            self.busy = False
        return out

    cdef void _pull(self, const uint64_t* keys, const int32_t* slots, float* out,
                    Py_ssize_t n) noexcept nogil:
        cdef uint64_t hs[3 * PULL_GROUP]
        cdef uint32_t cand[3 * PULL_GROUP]
        cdef uint64_t pos
        cdef Py_ssize_t ngroups = (n + PULL_GROUP - 1) // PULL_GROUP
        cdef Py_ssize_t g, i, lo, hi, j
        cdef int ring
        cdef uint64_t h
        cdef uint32_t r
        cdef RowHeader* hdr
        cdef int W = self.width
        cdef uint64_t reach = HEADER_BYTES + W * sizeof(float)
        cdef const Index* ix = &self.rows_ix
        cdef const Slab* s = &self.rows
        for g in range(ngroups + 2):
            # stage 1: hash group g, prefetch its buckets
            if g < ngroups:
                ring = (g % 3) * PULL_GROUP
                lo = g * PULL_GROUP
                hi = lo + PULL_GROUP if lo + PULL_GROUP < n else n
                for i in range(lo, hi):
                    h = feat_hash(keys[i], slots[i])
                    hs[ring + i - lo] = h
                    pst_prefetch_r(&ix.buckets[h >> ix.shift])
            # stage 2: probe group g-1 up to the first tag match, prefetch the candidate row
            if 1 <= g <= ngroups:
                ring = ((g - 1) % 3) * PULL_GROUP
                lo = (g - 1) * PULL_GROUP
                hi = lo + PULL_GROUP if lo + PULL_GROUP < n else n
                for i in range(lo, hi):
                    r = ix_candidate(ix, hs[ring + i - lo], &pos)
                    cand[ring + i - lo] = r
                    if r != PST_EMPTY:
                        prefetch_row_r(s, r, reach)
            # stage 3: verify and gather group g-2
            if g >= 2:
                ring = ((g - 2) % 3) * PULL_GROUP
                lo = (g - 2) * PULL_GROUP
                hi = lo + PULL_GROUP if lo + PULL_GROUP < n else n
                for i in range(lo, hi):
                    r = cand[ring + i - lo]
                    if r != PST_EMPTY:
                        hdr = <RowHeader*>slab_at(s, r)
                        if hdr.key != keys[i] or hdr.slot != slots[i]:
                            r = ix_find(ix, s, hs[ring + i - lo], keys[i], slots[i], &pos)
                    if r != PST_EMPTY:
                        pst_copy(out + i * W, <float*>(slab_at(s, r) + HEADER_BYTES), W)
                    else:
                        pst_zero(out + i * W, W)

    # ----------------------------------------------------------------------------------------
    # push
    # ----------------------------------------------------------------------------------------

    def push(self, keys, slots, shows, clicks, grads, hour):
        """Train features: counters, admission of unseen ones, the optimizer on admitted rows.

        Duplicate features in one push are merged (shows, clicks and gradients summed, in batch
        order). Returns ``PushResult(created, filtered, updated)`` counted over unique features.
        Arguments are checked first (dtype, shape, contiguity, finite values); on a ValueError the
        table is unchanged.
        """
        keys = _check_keys(keys)
        cdef Py_ssize_t n = keys.shape[0]
        if slots is None:
            slots = np.zeros(n, np.int32)
        slots = _check_vec("slots", slots, np.int32, n)
        shows = _check_vec("shows", shows, np.float32, n)
        clicks = _check_vec("clicks", clicks, np.float32, n)
        grads = _check_mat("grads", grads, n, self.width, "1 + dim gradient columns")
        cdef int32_t hr = _check_hour(hour)
        if n == 0:
            return PushResult(0, 0, 0)
        cdef const uint64_t[::1] kv = keys
        cdef const int32_t[::1] sv = slots
        cdef const float[::1] shv = shows
        cdef const float[::1] ckv = clicks
        cdef const float[:, ::1] gv = grads
        cdef Py_ssize_t bad_s, bad_c, bad_g
        with nogil:
            bad_s = _first_bad(&shv[0], n, True)
            bad_c = _first_bad(&ckv[0], n, True)
            bad_g = _first_bad(&gv[0, 0], n * self.width, False)
        if bad_s >= 0:
            raise ValueError(f"shows: expected finite values >= 0, got {float(shows[bad_s])!r} at index {bad_s}")
        if bad_c >= 0:
            raise ValueError(f"clicks: expected finite values >= 0, got {float(clicks[bad_c])!r} at index {bad_c}")
        if bad_g >= 0:
            raise ValueError(f"grads: expected finite values, got {float(grads.flat[bad_g])!r} at row "
                             f"{bad_g // self.width}, column {bad_g % self.width}")
        cdef uint64_t res[3]
        cdef int rc
        self._enter()
        try:
            self._ensure_scratch(n)
            res[0] = res[1] = res[2] = 0
            with nogil:
                rc = self._push(&kv[0], &sv[0], &shv[0], &ckv[0], &gv[0, 0], n, hr, res)
            if rc != 0:
                self._raise_oom("push")
        finally:
            self.busy = False
        self.n_created += res[0]
        self.n_filtered += res[1]
        self.n_updated += res[2]
        return PushResult(int(res[0]), int(res[1]), int(res[2]))

    cdef _ensure_scratch(self, Py_ssize_t n):
        """Push buffers for `n` keys (one huge-page block, reused; grown by half at least): the
        merge index (ix_capacity_for(keys) buckets, all empty between pushes) and the merge
        records (one per key at most)."""
        cdef uint64_t rows = n
        cdef uint64_t ix_bytes, nbytes
        cdef char* p
        if rows <= self.scratch_rows:
            return
        if rows < self.scratch_rows * 3 // 2:
            rows = self.scratch_rows * 3 // 2
        ix_bytes = ix_capacity_for(rows) * sizeof(uint64_t)
        nbytes = ix_bytes + rows * self.merge_stride
        p = <char*>pst_big_alloc(nbytes)
        if p == NULL:
            raise MemoryError(f"pstable: could not allocate {nbytes} bytes for push buffers")
        memset(p, 0xFF, ix_bytes)               # every bucket empty (row id PST_EMPTY)
        free(self.scratch)
        self.scratch = p
        self.scratch_rows = rows
        self.scratch_bytes = nbytes
        self.merge_ix = <uint64_t*>p
        self.merged = p + ix_bytes

    cdef double _grad_divisor(self, float push_show) noexcept nogil:
        """What a push's gradient sums are divided by: its shows, at least 1 (a show below 1, or
        none, would magnify the gradient or divide by zero), or 1 without show_scale."""
        if self.show_scale and push_show > 1.0:
            return push_show
        return 1.0

    cdef void _apply(self, float* w, const float* g, double div) noexcept nogil:
        """The optimizer rule on one row (weights then opt_state) for the gradient g / div,
        every weight clipped. div = 1 divides exactly: the rule sees g bit for bit."""
        cdef float* st = w + self.width
        cdef int j, W = self.width
        cdef double b1p, b2p, lr_t, eps_t, m, v, gj
        cdef float mf, vf
        if self.rule == RULE_SGD:
            for j in range(W):
                w[j] = clip(<double>w[j] - self.lr * (<double>g[j] / div), self.bounds)
        elif self.rule == RULE_ADAGRAD:
            pst_adagrad(w, st, g, W, div, self.lr, self.g2init, self.bounds, self.dim)
        else:
            b1p = st[2 * W]
            b2p = st[2 * W + 1]
            lr_t = self.lr * sqrt(1.0 - b2p) / (1.0 - b1p)
            eps_t = sqrt(1.0 - b2p) * self.eps
            for j in range(W):
                gj = <double>g[j] / div
                mf = <float>(self.beta1 * st[j] + (1.0 - self.beta1) * gj)
                vf = <float>(self.beta2 * st[W + j] + (1.0 - self.beta2) * gj * gj)
                st[j] = mf
                st[W + j] = vf
                w[j] = clip(<double>w[j] - lr_t * (mf / (sqrt(<double>vf) + eps_t)), self.bounds)
            st[2 * W] = <float>(b1p * self.beta1)
            st[2 * W + 1] = <float>(b2p * self.beta2)

    cdef void _init_row(self, char* p, uint64_t h) noexcept nogil:
        """Initial weights (from the feature hash and the seed) and optimizer state of new row p."""
        init_values(<float*>(p + HEADER_BYTES), <float*>(p + HEADER_BYTES) + self.width,
                    self.dim, self.k, self.rule, h, self.init_mix, self.init_range,
                    self.beta1, self.beta2)

    cdef bint _admit(self, const RowHeader* pe, uint64_t h, int32_t hour) noexcept nogil:
        if self.policy == POLICY_NONE:
            return True
        if self.policy == POLICY_COUNT:
            return pe.show >= self.count_min
        if self.policy == POLICY_PROB:
            return admit_draw(h, self.admit_mix, hour) < self.prob
        return ((<double>pe.show - <double>pe.click) * self.nonclk
                + <double>pe.click * self.clk) >= self.threshold

    cdef int _push(self, const uint64_t* keys, const int32_t* slots, const float* shows,
                   const float* clicks, const float* grads, Py_ssize_t n, int32_t hour,
                   uint64_t* res) noexcept nogil:
        cdef int W = self.width
        cdef uint64_t* mix = self.merge_ix
        cdef char* merged = self.merged
        cdef uint64_t mstride = self.merge_stride
        cdef uint64_t b
        cdef uint64_t dcap, dmask, dshift
        cdef uint64_t est = n
        cdef bint full = False
        cdef uint64_t nu = 0                    # unique features (merge records) so far
        # pipeline state: rings of 3 groups
        cdef uint64_t hs[3 * GROUP]
        cdef uint64_t rec_at[3 * GROUP]         # phase 2: merge index bucket of the record
        cdef uint32_t rec[3 * GROUP]            # phase 2: the record
        cdef uint64_t scan                      # phase 2: next merge bucket to look at
        cdef uint64_t rows0, pend0              # phase 2: index sizes at its start
        cdef uint32_t cand[3 * GROUP]           # phase 2: candidate row of the probe
        cdef uint64_t cpos[3 * GROUP]
        cdef uint64_t ver[3]
        cdef Py_ssize_t ngroups = (n + GROUP - 1) // GROUP
        cdef Py_ssize_t g, i, lo, hi, u, nun
        cdef int ring
        cdef uint64_t h, pos, ppos
        cdef uint32_t r, pr
        cdef int32_t slot
        cdef uint64_t key
        cdef MergeHeader* m
        cdef RowHeader* hdr
        cdef RowHeader* pe
        cdef char* p
        cdef const float* gp
        cdef float sh, ck
        cdef bint created
        cdef bint check_pend
        cdef Index* ix = &self.rows_ix
        cdef Slab* s = &self.rows
        cdef int rc = 0
        PST_CHECK(<uint64_t>n <= self.scratch_rows)

        # ---- phase 1: merge duplicate features into one record each (sums in batch order).
        # Records are appended in order of first appearance; the merge index maps a feature to
        # its record: 8-byte buckets (hash tag << 32 | record), open addressing, home = top bits
        # of the hash, like the row index. Index buckets are small enough to stay in cache and
        # records are written front to back, so a key costs a cached probe (plus a record read
        # for a duplicate). Stage 1 hashes group g and prefetches its home buckets; stage 2
        # probes group g-1 in batch order: a first appearance appends a record, a duplicate adds
        # into its record. The index is sized for the unique fraction of the previous push
        # (+12.5%); if it fills past 3/4 the pass restarts at full size (it only writes push
        # buffers; sums and counts do not depend on the size). Phase 2 empties every bucket it
        # reads, so the index is empty again for the next push.
        if self.last_n > 0:
            est = self.last_nu * <uint64_t>n // self.last_n
            est += est // 8 + 64
            if est > <uint64_t>n:
                est = n
        dcap = ix_capacity_for(est)
        while True:
            PST_CHECK(dcap <= ix_capacity_for(self.scratch_rows))
            dmask = dcap - 1
            dshift = shift_for(dcap)
            nu = 0
            full = False
            for g in range(ngroups + 1):
                if g < ngroups:
                    ring = (g % 3) * GROUP
                    lo = g * GROUP
                    hi = lo + GROUP if lo + GROUP < n else n
                    for i in range(lo, hi):
                        h = feat_hash(keys[i], slots[i])
                        hs[ring + i - lo] = h
                        pst_prefetch_w(&mix[h >> dshift])
                if g >= 1:
                    ring = ((g - 1) % 3) * GROUP
                    lo = (g - 1) * GROUP
                    hi = lo + GROUP if lo + GROUP < n else n
                    for i in range(lo, hi):
                        key = keys[i]
                        slot = slots[i]
                        h = hs[ring + i - lo]
                        pos = h >> dshift
                        while True:
                            b = mix[pos]
                            if <uint32_t>b == PST_EMPTY:      # first appearance
                                if (nu + 1) * 4 > dcap * 3:
                                    full = True
                                    break
                                mix[pos] = (h & PST_HI) | nu
                                m = <MergeHeader*>(merged + nu * mstride)
                                m.key = key
                                m.slot = slot
                                m.show = shows[i]
                                m.click = clicks[i]
                                pst_copy(<float*>(<char*>m + sizeof(MergeHeader)), grads + i * W, W)
                                nu += 1
                                break
                            if (b & PST_HI) == (h & PST_HI):
                                m = <MergeHeader*>(merged + <uint32_t>b * mstride)
                                if m.key == key and m.slot == slot:
                                    m.show = m.show + shows[i]
                                    m.click = m.click + clicks[i]
                                    pst_add(<float*>(<char*>m + sizeof(MergeHeader)), grads + i * W, W)
                                    break
                            pos = (pos + 1) & dmask
                        if full:
                            break
                if full:
                    break
            if not full:
                break
            memset(mix, 0xFF, dcap * sizeof(uint64_t))  # empty again; n keys never fill
            dcap = ix_capacity_for(<uint64_t>n)
        self.last_n = n
        self.last_nu = nu

        # ---- phase 2: per merge record (unique feature), in merge-index bucket order, which is
        # hash order, as in the row index: its buckets are read front to back. Find or create the
        # row (or the pending entry, and decide admission), counters, optimizer, changed mark.
        # stage 1 takes group g's buckets from the scan (emptying them), prefetches their records
        # and, from the hash's top 32 bits that the bucket keeps (all a home bucket and a tag
        # need), their row index buckets; stage 2 probes group g-1 to the first tag match and
        # prefetches the whole row; stage 3 reads the records and resolves and updates group g-2.
        nun = <Py_ssize_t>nu
        ngroups = (nun + GROUP - 1) // GROUP
        scan = 0
        rows0 = ix.size
        pend0 = self.pend_ix.size
        for g in range(ngroups + 2):
            check_pend = self.pend.size > 0 or self.policy != POLICY_NONE
            if g < ngroups:
                ring = (g % 3) * GROUP
                lo = g * GROUP
                hi = lo + GROUP if lo + GROUP < nun else nun
                for u in range(lo, hi):
                    while <uint32_t>mix[scan] == PST_EMPTY:
                        scan += 1
                    b = mix[scan]
                    mix[scan] = ~(<uint64_t>0)  # empty (as memset 0xFF leaves it)
                    rec_at[ring + u - lo] = scan
                    rec[ring + u - lo] = <uint32_t>b
                    scan += 1
                    prefetch_bytes_r(merged + <uint32_t>b * mstride, mstride)
                    h = b & PST_HI                  # the hash's top bits: enough to probe
                    hs[ring + u - lo] = h
                    pst_prefetch_r(&ix.buckets[h >> ix.shift])
            if 1 <= g <= ngroups:
                ring = ((g - 1) % 3) * GROUP
                lo = (g - 1) * GROUP
                hi = lo + GROUP if lo + GROUP < nun else nun
                ver[(g - 1) % 3] = ix.version
                for u in range(lo, hi):
                    h = hs[ring + u - lo]
                    r = ix_candidate(ix, h, &cpos[ring + u - lo])
                    cand[ring + u - lo] = r
                    if r != PST_EMPTY:
                        prefetch_row_w(s, r)
                    elif check_pend:
                        pst_prefetch_r(&self.pend_ix.buckets[h >> self.pend_ix.shift])
            if g >= 2:
                ring = ((g - 2) % 3) * GROUP
                lo = (g - 2) * GROUP
                hi = lo + GROUP if lo + GROUP < nun else nun
                if (ix_grow_for_pass(ix, rows0, rec_at[ring], dcap, &self.oom_bytes) != 0
                        or ix_grow_for_pass(&self.pend_ix, pend0, rec_at[ring], dcap,
                                            &self.oom_bytes) != 0):
                    rc = -1
                    break
                for u in range(lo, hi):
                    m = <MergeHeader*>(merged + rec[ring + u - lo] * mstride)
                    key = m.key
                    slot = m.slot
                    h = feat_hash(key, slot)        # the whole hash: initial values, admission
                    sh = m.show
                    ck = m.click
                    gp = <const float*>(<char*>m + sizeof(MergeHeader))
                    r = cand[ring + u - lo]
                    pos = cpos[ring + u - lo]
                    if r != PST_EMPTY:
                        hdr = <RowHeader*>slab_at(s, r)
                        if hdr.key != key or hdr.slot != slot:
                            r = ix_find(ix, s, h, key, slot, &pos)
                    elif ver[(g - 2) % 3] != ix.version:   # rows were added since the probe
                        r = ix_find(ix, s, h, key, slot, &pos)
                    created = False
                    if r != PST_EMPTY:
                        p = slab_at(s, r)
                    elif self.policy == POLICY_NONE and self.pend.size == 0:
                        # admitted at once. (Pending entries under policy none come from a load
                        # of another policy's export: they take the pending path below.)
                        p = entry_append(ix, s, h, key, slot, &pos, &self.oom_bytes)
                        if p == NULL:
                            rc = -1
                            break
                        header_set(<RowHeader*>p, key, slot, 0.0, 0.0, hour)
                        self._init_row(p, h)
                        created = True
                    else:
                        # not a row: counters go to the pending entry, then admission
                        pr = ix_find(&self.pend_ix, &self.pend, h, key, slot, &ppos)
                        if pr == PST_EMPTY:
                            p = entry_append(&self.pend_ix, &self.pend, h, key, slot, &ppos,
                                             &self.oom_bytes)
                            if p == NULL:
                                rc = -1
                                break
                            pr = <uint32_t>(self.pend.size - 1)
                            header_set(<RowHeader*>p, key, slot, 0.0, 0.0, hour)
                        pe = <RowHeader*>slab_at(&self.pend, pr)
                        pe.show = pe.show + sh
                        pe.click = pe.click + ck
                        if hour > pe.last_seen:
                            pe.last_seen = hour
                        if not self._admit(pe, h, hour):
                            pe.mark = 1
                            res[1] += 1
                            continue
                        # admitted: the row takes the pending counters, then this push's gradient
                        p = entry_append(ix, s, h, key, slot, &pos, &self.oom_bytes)
                        if p == NULL:
                            rc = -1
                            break
                        header_set(<RowHeader*>p, key, slot, pe.show, pe.click, pe.last_seen)
                        (<RowHeader*>p).mark = 1
                        self._init_row(p, h)
                        self._apply(<float*>(p + HEADER_BYTES), gp, self._grad_divisor(sh))
                        res[0] += 1
                        entry_remove(&self.pend_ix, &self.pend, ppos, pr)  # pend_ix unchanged since
                        continue
                    hdr = <RowHeader*>p
                    hdr.show = hdr.show + sh
                    hdr.click = hdr.click + ck
                    if hour > hdr.last_seen:
                        hdr.last_seen = hour
                    self._apply(<float*>(p + HEADER_BYTES), gp, self._grad_divisor(sh))
                    hdr.mark = 1
                    if created:
                        res[0] += 1
                    else:
                        res[2] += 1
                if rc != 0:
                    break
        if rc != 0:                                 # buckets not scanned yet: empty them
            memset(mix, 0xFF, dcap * sizeof(uint64_t))
        return rc

    # ----------------------------------------------------------------------------------------
    # end_day: decay and eviction
    # ----------------------------------------------------------------------------------------

    def end_day(self, hour):
        """Day boundary at data hour `hour`: decay show/click, then evict.

        Rows are evicted when their unseen days ``(hour - last_seen) // 24`` exceed
        ``delete_after_unseen_days`` (if > 0) or their score is below ``delete_threshold``;
        pending entries by the unseen-days rule only. Every surviving row and pending entry is
        marked changed (its counters decayed). Evicted features become tombstones of the next
        ``export(changed_only=True)``. Returns ``dict(key=uint64[], slot=int32[])`` of evicted rows.
        """
        cdef int32_t hr = _check_hour(hour)
        cdef uint64_t n_rows = 0, n_pend = 0
        cdef int rc = 0
        self._enter()
        try:
            with nogil:
                n_rows = self._decay_flag(&self.rows, hr, True)
                n_pend = self._decay_flag(&self.pend, hr, False)
            rkeys = np.empty(n_rows, np.uint64)
            rslots = np.empty(n_rows, np.int32)
            pkeys = np.empty(n_pend, np.uint64)
            pslots = np.empty(n_pend, np.int32)
            rc = self._compact(&self.rows, &self.rows_ix, rkeys, rslots)
            if rc == 0:
                rc = self._compact(&self.pend, &self.pend_ix, pkeys, pslots)
            if rc != 0:
                self._raise_oom("end_day index")
        finally:
            self.busy = False
        self.n_evicted += n_rows
        self.n_evicted_pending += n_pend
        if n_rows or n_pend:
            self.tomb_keys.append(np.concatenate([rkeys, pkeys]))
            self.tomb_slots.append(np.concatenate([rslots, pslots]))
        return dict(key=rkeys, slot=rslots)

    cdef uint64_t _decay_flag(self, Slab* s, int32_t hour, bint by_score) noexcept nogil:
        """Decay counters, mark changed, flag evictions in mark bit 1; returns the flagged count."""
        cdef uint64_t i, n = 0
        cdef int64_t gap, days
        cdef float rate = <float>self.decay
        cdef RowHeader* hdr
        cdef bint ev
        for i in range(s.size):
            hdr = <RowHeader*>slab_at(s, i)
            hdr.show = hdr.show * rate
            hdr.click = hdr.click * rate
            gap = <int64_t>hour - hdr.last_seen
            days = gap // 24 if gap >= 0 else -((-gap + 23) // 24)
            ev = self.del_days > 0 and days > self.del_days
            if by_score and not ev:
                ev = ((<double>hdr.show - <double>hdr.click) * self.nonclk
                      + <double>hdr.click * self.clk) < self.del_threshold
            if ev:
                hdr.mark = 3
                n += 1
            else:
                hdr.mark = 1
        return n

    cdef int _compact(self, Slab* s, Index* ix, object keys_out, object slots_out) except -2:
        """Drop flagged rows (stable order), fill the evicted keys, rebuild the index. Also run
        with nothing to drop when the index is over 4x the size it needs (for instance the
        pending index once its features were admitted): indexes only grow otherwise."""
        cdef uint64_t[::1] ko = keys_out
        cdef int32_t[::1] so = slots_out
        cdef uint64_t i, w = 0, e = 0
        cdef RowHeader* hdr
        cdef int rc = 0
        if ko.shape[0] == 0 and ix.mask + 1 <= 4 * ix_capacity_for(s.size):
            return 0
        with nogil:
            for i in range(s.size):
                hdr = <RowHeader*>slab_at(s, i)
                if hdr.mark & 2:
                    ko[e] = hdr.key
                    so[e] = hdr.slot
                    e += 1
                else:
                    if w != i:
                        memcpy(slab_at(s, w), hdr, s.stride)
                    w += 1
            s.size = w
            slab_trim(s)
            rc = ix_rebuild(ix, s, ix_capacity_for(s.size), &self.oom_bytes)
        return rc

    # ----------------------------------------------------------------------------------------
    # export / mark_saved / load
    # ----------------------------------------------------------------------------------------

    def export(self, changed_only=False):
        """The table as fixed-width numpy columns (see docs/design.md).

        ``changed_only=False``: every admitted row (state 0) then every pending entry (state 1).
        ``changed_only=True``: tombstones (state 2) of features evicted since ``mark_saved()``
        first, then rows and pending entries changed since then. ``load`` of the result into an
        empty table reproduces this table bit for bit.
        """
        cdef bint only = bool(changed_only)
        cdef uint64_t nr = 0, npd = 0, i
        self._enter()
        try:
            with nogil:
                if only:
                    for i in range(self.rows.size):
                        nr += (<RowHeader*>slab_at(&self.rows, i)).mark & 1
                    for i in range(self.pend.size):
                        npd += (<RowHeader*>slab_at(&self.pend, i)).mark & 1
                else:
                    nr = self.rows.size
                    npd = self.pend.size
            if only and self.tomb_keys:
                tk = np.concatenate(self.tomb_keys)
                ts = np.concatenate(self.tomb_slots)
            else:
                tk = np.empty(0, np.uint64)
                ts = np.empty(0, np.int32)
            nt = tk.shape[0]
            total = nt + nr + npd
            cols = dict(
                key=np.empty(total, np.uint64),
                slot=np.empty(total, np.int32),
                state=np.empty(total, np.uint8),
                show=np.zeros(total, np.float32),
                click=np.zeros(total, np.float32),
                last_seen=np.zeros(total, np.int32),
                weights=np.zeros((total, self.width), np.float32),
                opt_state=np.zeros((total, self.k), np.float32),
            )
            cols["key"][:nt] = tk
            cols["slot"][:nt] = ts
            cols["state"][:nt] = STATE_TOMBSTONE
            cols["state"][nt:nt + nr] = STATE_ROW
            cols["state"][nt + nr:] = STATE_PENDING
            self._fill(cols, nt, only)
        finally:
            self.busy = False
        return cols

    cdef _fill(self, dict cols, uint64_t start, bint only):
        cdef uint64_t[::1] key = cols["key"]
        cdef int32_t[::1] slot = cols["slot"]
        cdef float[::1] show = cols["show"]
        cdef float[::1] click = cols["click"]
        cdef int32_t[::1] last = cols["last_seen"]
        cdef float[:, ::1] wts = cols["weights"]
        cdef float[:, ::1] opt = cols["opt_state"]
        cdef uint64_t o = start, i
        cdef RowHeader* hdr
        cdef char* p
        cdef int W = self.width, K = self.k
        with nogil:
            for i in range(self.rows.size):
                p = slab_at(&self.rows, i)
                hdr = <RowHeader*>p
                if only and not (hdr.mark & 1):
                    continue
                key[o] = hdr.key
                slot[o] = hdr.slot
                show[o] = hdr.show
                click[o] = hdr.click
                last[o] = hdr.last_seen
                memcpy(&wts[o, 0], p + HEADER_BYTES, W * sizeof(float))
                if K:
                    memcpy(&opt[o, 0], p + HEADER_BYTES + W * sizeof(float), K * sizeof(float))
                o += 1
            for i in range(self.pend.size):
                hdr = <RowHeader*>slab_at(&self.pend, i)
                if only and not (hdr.mark & 1):
                    continue
                key[o] = hdr.key
                slot[o] = hdr.slot
                show[o] = hdr.show
                click[o] = hdr.click
                last[o] = hdr.last_seen
                o += 1

    def mark_saved(self):
        """Forget the changed marks and the tombstones (after a successful save)."""
        cdef uint64_t i
        self._enter()
        try:
            with nogil:
                for i in range(self.rows.size):
                    (<RowHeader*>slab_at(&self.rows, i)).mark = 0
                for i in range(self.pend.size):
                    (<RowHeader*>slab_at(&self.pend, i)).mark = 0
            self.tomb_keys = []
            self.tomb_slots = []
        finally:
            self.busy = False

    def load(self, cols):
        """Bulk upsert of exported columns, applied in order.

        state 0 upserts a row and drops any pending entry of the feature; state 1 upserts a
        pending entry and drops any row of the feature; state 2 removes both. Loaded entries are
        not marked changed (they come from a saved version). Every column is checked first
        (presence, dtype, shape, dim, opt_state width, state values, finite values); a ValueError
        names what does not match and leaves the table unchanged.
        """
        if not hasattr(cols, "keys") or not hasattr(cols, "__getitem__"):
            raise ValueError(f"cols: expected a dict of columns {EXPORT_COLUMNS}, got {type(cols).__name__}")
        missing = [c for c in EXPORT_COLUMNS if c not in cols]
        if missing:
            raise ValueError(f"cols: missing column(s) {missing}; expected {list(EXPORT_COLUMNS)}")
        key = cols["key"]
        if not isinstance(key, np.ndarray) or key.ndim != 1:
            raise ValueError(f"key: expected a 1-D uint64 array, got "
                             f"{getattr(key, 'shape', type(key).__name__)}")
        cdef Py_ssize_t n = key.shape[0]
        want = dict(key=(np.uint64, (n,)), slot=(np.int32, (n,)), state=(np.uint8, (n,)),
                    show=(np.float32, (n,)), click=(np.float32, (n,)), last_seen=(np.int32, (n,)),
                    weights=(np.float32, (n, self.width)), opt_state=(np.float32, (n, self.k)))
        arrs = {}
        for name, (dt, shape) in want.items():
            a = cols[name]
            if not isinstance(a, np.ndarray):
                raise ValueError(f"{name}: expected a numpy array of {np.dtype(dt)}, got {type(a).__name__}")
            if name == "key" and a.dtype == np.int64:
                a = a.view(np.uint64)
            if a.dtype != dt:
                raise ValueError(f"{name}: expected dtype {np.dtype(dt)}, got {a.dtype}")
            if a.shape != shape:
                why = ""
                if name == "weights" and a.ndim == 2 and a.shape[0] == n:
                    why = f" (1 + dim = {self.width} columns: this table has dim {self.dim})"
                elif name == "opt_state" and a.ndim == 2 and a.shape[0] == n:
                    why = (f" (rule {self.config.optimizer.rule!s} with dim {self.dim} keeps "
                           f"{self.k} values per row)")
                raise ValueError(f"{name}: expected shape {shape}{why}, got {a.shape}")
            arrs[name] = np.ascontiguousarray(a)
        st = arrs["state"]
        if n and st.max() > STATE_TOMBSTONE:
            bad = int(np.argmax(st > STATE_TOMBSTONE))
            raise ValueError(f"state: expected 0 (row), 1 (pending) or 2 (tombstone), got {st[bad]} at row {bad}")
        cdef const float[::1] fv
        cdef Py_ssize_t bad_at
        for name in ("show", "click", "weights", "opt_state"):
            a = arrs[name]
            if a.size:
                fv = a.reshape(-1)
                with nogil:  # one branch-free pass over the bits (numpy's isfinite makes temporaries)
                    bad_at = _first_bad(&fv[0], fv.shape[0], False)
                if bad_at >= 0:
                    raise ValueError(f"{name}: expected finite values, got a non-finite value at row "
                                     f"{bad_at // (a.size // n)}")
        if n == 0:
            return
        cdef const uint64_t[::1] kv = arrs["key"]
        cdef const int32_t[::1] sv = arrs["slot"]
        cdef const uint8_t[::1] stv = st
        cdef const float[::1] shv = arrs["show"]
        cdef const float[::1] ckv = arrs["click"]
        cdef const int32_t[::1] lsv = arrs["last_seen"]
        cdef const float[:, ::1] wv = arrs["weights"]
        cdef const float* op = NULL
        cdef const float[:, ::1] ov
        if self.k:
            ov = arrs["opt_state"]
            op = &ov[0, 0]
        cdef uint64_t n_rows_in = int((st == STATE_ROW).sum())
        cdef uint64_t n_pend_in = int((st == STATE_PENDING).sum())
        cdef int rc
        self._enter()
        try:
            if self.rows.size + n_rows_in > (self.rows_ix.mask + 1) * 3 // 4:
                with nogil:  # from the buckets alone (no row is read)
                    rc = ix_grow(&self.rows_ix, ix_capacity_for(self.rows.size + n_rows_in),
                                 &self.oom_bytes)
                if rc != 0:
                    self._raise_oom("load index")
            with nogil:
                rc = self._load(&kv[0], &sv[0], &stv[0], &shv[0], &ckv[0], &lsv[0], &wv[0, 0], op, n,
                                n_pend_in)
            if rc != 0:
                self._raise_oom("load")
        finally:
            self.busy = False

    cdef int _load(self, const uint64_t* keys, const int32_t* slots, const uint8_t* state,
                   const float* shows, const float* clicks, const int32_t* last_seen,
                   const float* wts, const float* opt, Py_ssize_t n,
                   uint64_t n_pend_in) noexcept nogil:
        """Apply the entries in order, as the three-stage pipeline of pull over groups of
        LOAD_GROUP: hash group g and prefetch its buckets; probe group g-1 to the first tag match
        (or empty bucket) and prefetch the entry; apply group g-2 one entry at a time.

        Applying an entry may insert, erase or rehash, so a probe result is only a hint: the apply
        resumes the probe at the bucket where it stopped if the index's epoch is unchanged (only
        inserts since: the buckets before it can only have filled up), else probes from the home
        bucket. Either way it reads the index as it is now, so a later entry of a feature sees
        (and overwrites) an earlier one of the same call, even in the same group.
        A row or tombstone entry must drop a pending entry of its feature. Most have none, and
        the pending index is another random cache miss per entry, so a small filter of every
        pending feature (one 64-bit word per hash, 2 bits set; about 8 bits per pending entry,
        cache-sized) is built first: the index is neither prefetched nor probed when the filter
        says "absent" (always exact; no filter at all while nothing is pending, as in a base
        load)."""
        cdef uint64_t hs[3 * LOAD_GROUP]
        cdef uint64_t rpos[3 * LOAD_GROUP]    # rows_ix bucket where the probe stopped
        cdef uint64_t ppos[3 * LOAD_GROUP]    # pend_ix bucket where the probe stopped
        cdef bint pdone[3 * LOAD_GROUP]       # ppos is set (pend_ix was probed for this entry)
        cdef uint64_t repoch[3]               # rows_ix.epoch / pend_ix.epoch when a group was probed
        cdef uint64_t pepoch[3]
        cdef Py_ssize_t ngroups = (n + LOAD_GROUP - 1) // LOAD_GROUP
        cdef Py_ssize_t g, i, lo, hi
        cdef int ring, gr, j
        cdef uint64_t h, pos
        cdef uint32_t r
        cdef uint8_t st
        cdef char* p
        cdef int W = self.width, K = self.k
        cdef Index* rix = &self.rows_ix
        cdef Slab* rs = &self.rows
        cdef Index* pix = &self.pend_ix
        cdef Slab* ps = &self.pend
        # the filter: bits (h >> 32) & 63 and (h >> 38) & 63 of word h & fmask, for every pending
        # feature now or inserted by this call (removals leave their bits: false positives only)
        cdef uint64_t* filt = NULL
        cdef uint64_t fmask = 0, fw, nf
        cdef Py_ssize_t q
        cdef RowHeader* hdr
        nf = ps.size + n_pend_in
        if nf > 0:
            fw = 64
            while fw * 8 < nf:              # 64 bits per word, ~8 bits per entry
                fw *= 2
            filt = <uint64_t*>malloc(fw * sizeof(uint64_t))
            if filt != NULL:                # without it, every entry probes the pending index
                memset(filt, 0, fw * sizeof(uint64_t))
                fmask = fw - 1
                for q in range(<Py_ssize_t>ps.size):
                    hdr = <RowHeader*>slab_at(ps, q)
                    h = feat_hash(hdr.key, hdr.slot)
                    filt[h & fmask] |= filter_bits(h)
        for g in range(ngroups + 2):
            # stage 1: hash group g, prefetch its buckets
            if g < ngroups:
                ring = (g % 3) * LOAD_GROUP
                lo = g * LOAD_GROUP
                hi = lo + LOAD_GROUP if lo + LOAD_GROUP < n else n
                for i in range(lo, hi):
                    h = feat_hash(keys[i], slots[i])
                    hs[ring + i - lo] = h
                    pst_prefetch_r(&rix.buckets[h >> rix.shift])
                    if state[i] != STATE_ROW:
                        pst_prefetch_r(&pix.buckets[h >> pix.shift])
                    if filt != NULL:
                        pst_prefetch_r(&filt[h & fmask])
            # stage 2: probe group g-1 to the first tag match or empty bucket, prefetch the entry
            if 1 <= g <= ngroups:
                gr = (g - 1) % 3
                ring = gr * LOAD_GROUP
                lo = (g - 1) * LOAD_GROUP
                hi = lo + LOAD_GROUP if lo + LOAD_GROUP < n else n
                repoch[gr] = rix.epoch
                pepoch[gr] = pix.epoch
                for i in range(lo, hi):
                    j = ring + i - lo
                    h = hs[j]
                    r = ix_candidate(rix, h, &rpos[j])
                    if r != PST_EMPTY:
                        prefetch_row_w(rs, r)
                    pdone[j] = ps.size > 0 and (state[i] == STATE_PENDING or filt == NULL
                                                or maybe_in(filt, fmask, h))
                    if pdone[j]:
                        r = ix_candidate(pix, h, &ppos[j])
                        if r != PST_EMPTY:
                            pst_prefetch_w(slab_at(ps, r))
            # stage 3: apply group g-2, in order
            if g >= 2:
                gr = (g - 2) % 3
                ring = gr * LOAD_GROUP
                lo = (g - 2) * LOAD_GROUP
                hi = lo + LOAD_GROUP if lo + LOAD_GROUP < n else n
                for i in range(lo, hi):
                    j = ring + i - lo
                    h = hs[j]
                    st = state[i]
                    # the row, if any (every state needs it)
                    if rix.epoch == repoch[gr]:
                        r = ix_find_from(rix, rs, rpos[j], h, keys[i], slots[i], &pos)
                    else:
                        r = ix_find(rix, rs, h, keys[i], slots[i], &pos)
                    if st == STATE_ROW:
                        if r == PST_EMPTY:
                            p = entry_append(rix, rs, h, keys[i], slots[i], &pos, &self.oom_bytes)
                            if p == NULL:
                                free(filt)
                                return -1
                        else:
                            p = slab_at(rs, r)
                        header_set(<RowHeader*>p, keys[i], slots[i], shows[i], clicks[i], last_seen[i])
                        pst_copy(<float*>(p + HEADER_BYTES), wts + i * W, W)
                        if K:
                            pst_copy(<float*>(p + HEADER_BYTES) + W, opt + i * K, K)
                    elif r != PST_EMPTY:
                        entry_remove(rix, rs, pos, r)
                    if st != STATE_PENDING and (ps.size == 0 or (filt != NULL
                                                               and not maybe_in(filt, fmask, h))):
                        continue            # no pending entry of this feature to drop
                    # the pending entry, if any
                    if pdone[j] and pix.epoch == pepoch[gr]:
                        r = ix_find_from(pix, ps, ppos[j], h, keys[i], slots[i], &pos)
                    else:
                        r = ix_find(pix, ps, h, keys[i], slots[i], &pos)
                    if st == STATE_PENDING:
                        if r == PST_EMPTY:
                            p = entry_append(pix, ps, h, keys[i], slots[i], &pos, &self.oom_bytes)
                            if p == NULL:
                                free(filt)
                                return -1
                            if filt != NULL:
                                filt[h & fmask] |= filter_bits(h)
                        else:
                            p = slab_at(ps, r)
                        header_set(<RowHeader*>p, keys[i], slots[i], shows[i], clicks[i], last_seen[i])
                    elif r != PST_EMPTY:
                        entry_remove(pix, ps, pos, r)
        free(filt)
        return 0


def feature_hash(keys, slots):
    """The table's index hash of features (uint64[n]); exposed for tests and tools."""
    keys = _check_keys(keys)
    cdef Py_ssize_t n = keys.shape[0], i
    slots = _check_vec("slots", slots, np.int32, n)
    out = np.empty(n, np.uint64)
    cdef const uint64_t[::1] kv = keys
    cdef const int32_t[::1] sv = slots
    cdef uint64_t[::1] ov = out
    with nogil:
        for i in range(n):
            ov[i] = feat_hash(kv[i], sv[i])
    return out
