# cython: language_level=3
"""Header of the sparse table: fixed-width types, the row layout, the slab and the index.

A row lives in a *slab* (fixed-size chunks of ``CHUNK_ROWS`` rows, so growth never copies rows)
and is found through an *index* (open addressing, linear probing). A bucket is one ``uint64``:
high 32 bits = tag (high half of the feature hash), low 32 bits = row id, ``0xFFFFFFFF`` = empty.
The home bucket is the top log2(capacity) bits of the hash, hence of the tag.
The empty marker lives in the row-id half, so every 64-bit key value is a valid key.

Row layout, ``stride`` bytes (a multiple of 8), at ``chunks[i >> CHUNK_SHIFT] + (i & CHUNK_MASK) * stride``::

    RowHeader                      28 bytes (below)
    float32_t weights[1 + dim]     w (the 1-wide weight), then the embedding
    float32_t opt_state[k]         optimizer state, k = config.opt_state_width(rule, dim)
    padding to a multiple of 8

Chunks are carved from blocks of 1..16 chunks (at most 1/8 of the slab, so unused capacity stays
small); blocks of 2 MiB or more are 2 MiB aligned and advised as transparent huge pages (random
row access is TLB-bound otherwise). A pending entry (feature seen but not yet admitted) is a bare ``RowHeader`` (stride 32) in its own
slab and index, with the same code.
"""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

ctypedef float float32_t        # every stored value
ctypedef uint32_t row_id_t      # index of a row in its slab; 0xFFFFFFFF = empty bucket


cdef struct RowHeader:
    uint64_t key                # raw 64-bit id (int64 ids viewed bit for bit)
    int32_t slot                # slot / table id; (slot, key) is the feature
    int32_t last_seen           # hour index of the newest push of this feature
    float32_t show              # decayed show count
    float32_t click             # decayed click count
    uint32_t mark               # bit 0: changed since mark_saved(); bit 1: flagged for eviction
                                # (inside end_day only)


cdef struct Slab:
    char** chunks               # chunk pointers; chunk c holds rows [c*CHUNK_ROWS, (c+1)*CHUNK_ROWS)
    uint64_t n_chunks           # chunks allocated
    uint64_t cap_chunks         # length of the chunks pointer array
    uint64_t size               # rows in use (dense: 0 .. size-1)
    uint64_t stride             # bytes per row, a multiple of 8
    char** blocks               # allocations the chunks are carved from (2 MiB aligned, huge pages)
    uint64_t* block_chunks      # chunks in each block (1, growing to 16 as the slab grows)
    uint64_t n_blocks           # blocks allocated
    uint64_t cap_blocks         # length of the blocks / block_chunks arrays
    uint64_t spare              # chunks of the last block not handed out yet
    uint64_t alloc_bytes        # bytes of all blocks


cdef struct MergeHeader:        # a push-local merge record, one per unique feature of a pass:
                                # this, then grads[1 + dim] (show, click and grads summed in
                                # batch order); stride a multiple of 8
    uint64_t key
    int32_t slot
    float32_t show
    float32_t click


cdef struct Index:
    uint64_t* buckets           # (tag << 32) | row id; row id 0xFFFFFFFF = empty
    uint64_t mask               # capacity - 1 (capacity is a power of two, 2^6 .. 2^32)
    uint64_t shift              # 64 - log2(capacity): home bucket = hash >> shift, so the home of
                                # an entry is also (tag << 32) >> shift: growth and deletion never
                                # read rows
    uint64_t size               # occupied buckets (= rows in the slab)
    uint64_t version            # bumped on every insert, erase or rehash (invalidates probe results)
    uint64_t epoch              # bumped on every erase or rehash only: while it is unchanged, buckets
                                # only fill up, so a probe may resume where an earlier one stopped
    uint64_t walk               # buckets walked past the home by all inserts (probe-path health)


@cython.final                           # cdef methods are called directly (and inlined), not via a vtable
cdef class SparseTable:
    cdef readonly object config         # the TableConfig
    cdef Slab rows                      # admitted rows
    cdef Index rows_ix
    cdef Slab pend                      # pending (not yet admitted) features: counters only
    cdef Index pend_ix
    cdef int dim                        # embedding width
    cdef int width                      # 1 + dim: floats in `weights`
    cdef int k                          # floats in `opt_state`
    cdef int rule                       # RULE_* constant
    cdef int policy                     # POLICY_* constant
    cdef uint64_t init_mix              # mix64(seed ^ salt): stream of initial values
    cdef uint64_t admit_mix             # mix64(seed ^ salt): stream of admission draws
    cdef double lr, init_range, bounds, g2init, beta1, beta2, eps
    cdef bint show_scale                # divide a push's gradient sums by its shows (>= 1)
    cdef double count_min, prob, threshold
    cdef double nonclk, clk, decay, del_threshold
    cdef int64_t del_days
    cdef char* scratch                  # per-push buffers, grown on demand and reused (one block):
    cdef uint64_t scratch_bytes
    cdef uint64_t scratch_rows          # keys per push they hold
    cdef uint64_t* merge_ix             # the merge index: ix_capacity_for(keys) buckets, (hash tag
                                        # << 32) | record; all empty between pushes
    cdef char* merged                   # the merge records (MergeHeader + grads), one per key at most
    cdef uint64_t merge_stride          # bytes per merge record
    cdef uint64_t last_n, last_nu       # keys and unique features of the previous push: the merge
                                        # index is sized for about as many uniques (fits caches)
    cdef uint64_t oom_bytes             # size of the allocation that failed, for the MemoryError
    cdef list tomb_keys                 # uint64 arrays of features evicted since mark_saved()
    cdef list tomb_slots                # int32 arrays, parallel to tomb_keys
    cdef uint64_t n_created, n_filtered, n_updated, n_evicted, n_evicted_pending
    cdef bint busy                      # a call is running (the table is not thread-safe)

    cdef _enter(self)
    cdef _raise_oom(self, str what)
    cdef void _pull(self, const uint64_t* keys, const int32_t* slots, float* out,
                    Py_ssize_t n) noexcept nogil
    cdef _ensure_scratch(self, Py_ssize_t n)
    cdef double _grad_divisor(self, float push_show) noexcept nogil
    cdef void _apply(self, float* w, const float* g, double div) noexcept nogil
    cdef void _init_row(self, char* p, uint64_t h) noexcept nogil
    cdef bint _admit(self, const RowHeader* pe, uint64_t h, int32_t hour) noexcept nogil
    cdef int _push(self, const uint64_t* keys, const int32_t* slots, const float* shows,
                   const float* clicks, const float* grads, Py_ssize_t n, int32_t hour,
                   uint64_t* res) noexcept nogil
    cdef uint64_t _decay_flag(self, Slab* s, int32_t hour, bint by_score) noexcept nogil
    cdef int _compact(self, Slab* s, Index* ix, object keys_out, object slots_out) except -2
    cdef _fill(self, dict cols, uint64_t start, bint only)
    cdef int _load(self, const uint64_t* keys, const int32_t* slots, const uint8_t* state,
                   const float* shows, const float* clicks, const int32_t* last_seen,
                   const float* wts, const float* opt, Py_ssize_t n,
                   uint64_t n_pend_in) noexcept nogil
