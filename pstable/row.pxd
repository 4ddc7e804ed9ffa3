# cython: language_level=3
"""Fixed-width types, the row layout and the constants every unit of the table uses.

A row is ``stride`` bytes (a multiple of 8) in a slab (``slab.pxd``), found through an index
(``index.pxd``)::

    RowHeader                      HEADER_BYTES = 28 bytes (below)
    float32_t weights[1 + dim]     w (the 1-wide weight), then the embedding
    float32_t opt_state[k]         the optimizer rule's state, k = its width (``pst_rules.h``)
    padding to a multiple of 8

A pending entry (a feature seen but not yet admitted) is a bare ``RowHeader`` (``PENDING_STRIDE``
bytes) in its own slab and index, with the same code.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

ctypedef float float32_t        # every stored value
ctypedef uint32_t row_id_t      # index of a row in its slab; PST_EMPTY = empty bucket


cdef extern from "pst_kernels.h":
    row_id_t PST_EMPTY              # row id of an empty index bucket
    uint64_t PST_EMPTY_BUCKET       # an empty bucket (all bits set: what memset 0xFF leaves)
    uint64_t PST_HI                 # the tag half of a bucket
    uint64_t PST_GOLDEN
    uint64_t PST_INDEX_SALT
    uint64_t PST_INIT_SALT
    uint64_t PST_ADMIT_SALT
    int PST_CHUNK_SHIFT
    uint64_t PST_CHUNK_ROWS
    uint64_t PST_CHUNK_MASK
    void PST_CHECK(bint cond) noexcept nogil
    void* pst_big_alloc(size_t nbytes) noexcept nogil
    void pst_copy(float32_t* dst, const float32_t* src, int n) noexcept nogil
    void pst_zero(float32_t* dst, int n) noexcept nogil
    void pst_add(float32_t* dst, const float32_t* src, int n) noexcept nogil
    void pst_prefetch_r(const void* p) noexcept nogil
    void pst_prefetch_w(const void* p) noexcept nogil
    void pst_prefetch_span_r(const void* p, uint64_t nbytes) noexcept nogil
    void pst_prefetch_span_w(const void* p, uint64_t nbytes) noexcept nogil
    uint64_t pst_mix64(uint64_t z) noexcept nogil


cdef struct RowHeader:
    uint64_t key                # raw 64-bit id (int64 ids viewed bit for bit)
    int32_t slot                # slot / table id; (slot, key) is the feature
    int32_t last_seen           # hour index of the newest push of this feature
    float32_t show              # decayed show count
    float32_t click             # decayed click count
    uint32_t mark               # MARK_* bits


cdef enum:
    MARK_CHANGED = 1            # mark bit: changed since mark_saved() (in the next delta)
    MARK_EVICT = 2              # mark bit: flagged for eviction (inside end_day only)
    HEADER_BYTES = 28           # sizeof the RowHeader fields (the struct itself pads to 32)
    PENDING_STRIDE = 32         # bytes per pending entry (a RowHeader, padded)


cdef enum EntryState:           # the ``state`` column of an export
    STATE_ROW = 0               # an admitted row
    STATE_PENDING = 1           # a pending entry (counters only)
    STATE_TOMBSTONE = 2         # a feature evicted since mark_saved()


cdef struct MergeHeader:        # a push-local merge record, one per unique feature of a push:
                                # this, then float32_t grads[1 + dim] (show, click and grads
                                # summed in batch order); stride a multiple of 8
    uint64_t key
    int32_t slot
    float32_t show
    float32_t click


cdef struct Score:              # a feature's show/click score, as PaddlePaddle's CTR accessor:
    double nonclk               # (show - click) * nonclk + click * clk; admission (show_click)
    double clk                  # and eviction (delete_threshold) both use it


cdef inline float32_t* row_weights(char* p) noexcept nogil:
    """The 1 + dim weights of the row at p (its optimizer state follows them)."""
    return <float32_t*>(p + HEADER_BYTES)


cdef inline void header_set(RowHeader* hdr, uint64_t key, int32_t slot, float32_t show,
                            float32_t click, int32_t last_seen) noexcept nogil:
    """Fill a new or loaded entry's header, not marked changed (loaded: not changed since the
    last save; new: the caller marks it once it is trained)."""
    hdr.key = key
    hdr.slot = slot
    hdr.show = show
    hdr.click = click
    hdr.last_seen = last_seen
    hdr.mark = 0


cdef inline double score_of(const Score* sc, float32_t show, float32_t click) noexcept nogil:
    return (<double>show - <double>click) * sc.nonclk + <double>click * sc.clk
