# cython: language_level=3
"""Header of the sparse table class. The table is one extension module built from units:

- ``row.pxd``: fixed-width types, the row layout, mark bits, entry states; declares
  ``pst_kernels.h`` (inline C: constants, allocation, prefetch, the mixer, row copies)
- ``slab.pxd`` / ``slab.pxi``: rows in fixed-size chunks
- ``index.pxd`` / ``index.pxi``: the open-addressing index of a slab, the feature hash
- ``rules.pxd``: the optimizer rules, each defined once in ``pst_rules.h`` (width, init, apply)
- ``admission.pxd`` / ``admission.pxi``: where admission of an unseen feature is decided
- ``pipeline.pxi``: the group pipeline of the hot loops
- ``checks.pxi``: argument checks of the public methods
- ``_table.pyx``: the class (pull, push, end_day, export, load), which includes the ``.pxi`` units
"""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from pstable.admission cimport Admission
from pstable.index cimport Index
from pstable.row cimport RowHeader, Score, float32_t
from pstable.rules cimport pst_rule
from pstable.slab cimport Slab


@cython.final                           # cdef methods are called directly (and inlined), not via a vtable
cdef class SparseTable:
    cdef readonly object config         # the TableConfig
    cdef Slab rows                      # admitted rows
    cdef Index rows_ix
    cdef Slab pend                      # pending (not yet admitted) features: counters only
    cdef Index pend_ix
    cdef int dim                        # embedding width
    cdef int width                      # 1 + dim: floats in `weights`
    cdef int k                          # floats in `opt_state` (the rule's width)
    cdef pst_rule opt                   # the optimizer rule and its parameters
    cdef double init_range              # embeddings start uniform in [-init_range, init_range]
    cdef uint64_t init_mix              # mix64(seed ^ salt): stream of initial values
    cdef Admission adm                  # the admission policy and its parameters
    cdef Score score                    # show/click score of admission and eviction
    cdef double decay, del_threshold
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
    cdef void _pull(self, const uint64_t* keys, const int32_t* slots, float32_t* out,
                    Py_ssize_t n) noexcept nogil
    cdef _ensure_scratch(self, Py_ssize_t n)
    cdef void _new_row(self, char* p, uint64_t h) noexcept nogil
    cdef uint64_t _merge(self, const uint64_t* keys, const int32_t* slots, const float32_t* shows,
                         const float32_t* clicks, const float32_t* grads, Py_ssize_t n,
                         uint64_t* cap_out) noexcept nogil
    cdef int _push(self, const uint64_t* keys, const int32_t* slots, const float32_t* shows,
                   const float32_t* clicks, const float32_t* grads, Py_ssize_t n, int32_t hour,
                   uint64_t* res) noexcept nogil
    cdef uint64_t _decay_flag(self, Slab* s, int32_t hour, bint by_score) noexcept nogil
    cdef int _compact(self, Slab* s, Index* ix, object keys_out, object slots_out) except -2
    cdef _fill(self, dict cols, uint64_t start, bint only)
    cdef int _load(self, const uint64_t* keys, const int32_t* slots, const uint8_t* state,
                   const float32_t* shows, const float32_t* clicks, const int32_t* last_seen,
                   const float32_t* wts, const float32_t* opt, Py_ssize_t n,
                   uint64_t n_pend_in) noexcept nogil
