# cython: language_level=3
"""The sparse parameter table: pull, push (admission + optimizer), end_day (decay + eviction),
export / load. The units it is built from are listed in ``_table.pxd``; ``docs/pstable.md`` has
the contract.

Hot paths (pull, push, load) are single ``with nogil:`` loops over raw pointers taken from typed
memoryviews, processing keys in groups through a software pipeline (``pipeline.pxi``): hash a
group and prefetch its buckets, probe the previous group and prefetch its rows, then gather /
update the group before that. Push first merges duplicates in a push-local table (no row read),
then touches each unique feature's row once (see ``_push``).
"""

from collections import namedtuple

import numpy as np

from libc.math cimport isfinite
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

from pstable.admission cimport POLICY_COUNT, POLICY_NONE, POLICY_PROB, POLICY_SHOW_CLICK
from pstable.row cimport (HEADER_BYTES, MARK_CHANGED, MARK_EVICT, PENDING_STRIDE, PST_ADMIT_SALT,
                          PST_CHECK, PST_CHUNK_MASK, PST_CHUNK_ROWS, PST_CHUNK_SHIFT, PST_EMPTY,
                          PST_EMPTY_BUCKET, PST_GOLDEN, PST_HI, PST_INDEX_SALT, PST_INIT_SALT,
                          STATE_PENDING, STATE_ROW, STATE_TOMBSTONE, MergeHeader, header_set,
                          pst_add, pst_big_alloc, pst_copy, pst_mix64, pst_prefetch_r,
                          pst_prefetch_span_r, pst_prefetch_span_w, pst_prefetch_w, pst_zero,
                          row_weights, score_of)
from pstable.rules cimport (PST_RULE_ADAGRAD, PST_RULE_ADAM, PST_RULE_SGD, pst_rule_apply,
                            pst_rule_init, pst_rule_width)

from pstable.config import AdmissionPolicy, OptimizerRule, TableConfig

include "checks.pxi"
include "slab.pxi"
include "index.pxi"
include "admission.pxi"
include "pipeline.pxi"

cdef enum:
    PULL_GROUP = 32            # keys per pipeline group of pull (a longer prefetch distance pays)
    PUSH_GROUP = 16            # keys per pipeline group of push's two passes
    LOAD_GROUP = 64            # entries per pipeline group of load

CHUNK_ROWS = PST_CHUNK_ROWS
HEADER_SIZE = HEADER_BYTES

RULE_IDS = {OptimizerRule.SGD: PST_RULE_SGD, OptimizerRule.ADAGRAD: PST_RULE_ADAGRAD,
            OptimizerRule.ADAM: PST_RULE_ADAM}
POLICY_IDS = {AdmissionPolicy.NONE: POLICY_NONE, AdmissionPolicy.COUNT_FILTER: POLICY_COUNT,
              AdmissionPolicy.PROBABILITY: POLICY_PROB, AdmissionPolicy.SHOW_CLICK: POLICY_SHOW_CLICK}


def rule_state_width(rule, int dim):
    """Floats of optimizer state per row of rule `rule` (an OptimizerRule) at embedding width
    `dim`, as the rule defines it (``pst_rules.h``); ``pstable.opt_state_width`` asks here."""
    return pst_rule_width(RULE_IDS[rule], dim)


cdef inline void init_weights(float32_t* w, int dim, uint64_t h, uint64_t init_mix,
                              double r) noexcept nogil:
    """Initial weights of the feature of hash h: w = 0, the embedding uniform in [-r, r] from
    (h, seed) only (mirrored bit for bit by tests/pstable/pstable_reference.py)."""
    cdef uint64_t base = pst_mix64(h ^ init_mix)
    cdef int i
    cdef double u
    w[0] = 0.0
    for i in range(dim):
        u = <double>(pst_mix64(base + <uint64_t>(i + 1) * PST_GOLDEN) >> 40) * (1.0 / 16777216.0)
        w[1 + i] = <float32_t>((2.0 * u - 1.0) * r)


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
        self.opt.rule = RULE_IDS[opt.rule]
        self.opt.show_scale = opt.show_scale
        self.opt.lr = opt.learning_rate
        self.opt.bounds = opt.weight_bounds
        self.opt.g2init = opt.initial_g2sum
        self.opt.beta1 = opt.beta1
        self.opt.beta2 = opt.beta2
        self.opt.eps = opt.epsilon
        self.k = pst_rule_width(self.opt.rule, self.dim)
        self.init_range = opt.initial_range
        cdef uint64_t seed = <uint64_t>int(config.seed)
        self.init_mix = pst_mix64(seed ^ PST_INIT_SALT)
        self.adm.policy = POLICY_IDS[adm.policy]
        self.adm.count_min = adm.count
        self.adm.prob = adm.probability
        self.adm.threshold = adm.threshold
        self.adm.admit_mix = pst_mix64(seed ^ PST_ADMIT_SALT)
        self.score.nonclk = config.nonclk_coeff
        self.score.clk = config.click_coeff
        self.decay = config.show_click_decay_rate
        self.del_threshold = config.delete_threshold
        self.del_days = config.delete_after_unseen_days
        self.rows.stride = ((HEADER_BYTES + sizeof(float32_t) * (self.width + self.k)) + 7) // 8 * 8
        self.merge_stride = (sizeof(MergeHeader) + sizeof(float32_t) * self.width + 7) // 8 * 8
        self.pend.stride = PENDING_STRIDE
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
        return 24 + sizeof(float32_t) * (self.width + self.k)

    def memory_bytes(self):
        """Bytes allocated by this table: row chunks, indexes, push scratch, tombstones."""
        return sum(self.memory_breakdown().values())

    def memory_breakdown(self):
        """dict of allocated bytes: rows, rows_index, pending, pending_index, scratch, tombstones."""
        return dict(
            rows=int(slab_footprint(&self.rows)),
            rows_index=int((self.rows_ix.mask + 1) * sizeof(uint64_t)),
            pending=int(slab_footprint(&self.pend)),
            pending_index=int((self.pend_ix.mask + 1) * sizeof(uint64_t)),
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
        cdef float32_t[:, ::1] ov = out
        self._enter()
        try:
            with nogil:
                self._pull(&kv[0], &sv[0], &ov[0, 0], n)
        finally:
            self.busy = False
        return out

    cdef void _pull(self, const uint64_t* keys, const int32_t* slots, float32_t* out,
                    Py_ssize_t n) noexcept nogil:
        cdef uint64_t hs[RING * PULL_GROUP]       # stage 1 -> 2: the hash
        cdef uint32_t cand[RING * PULL_GROUP]     # stage 2 -> 3: the candidate row
        cdef uint64_t pos
        cdef Py_ssize_t step, i
        cdef Span sp
        cdef uint32_t r
        cdef RowHeader* hdr
        cdef int W = self.width
        cdef uint64_t reach = HEADER_BYTES + W * sizeof(float32_t)
        cdef const Index* ix = &self.rows_ix
        cdef const Slab* s = &self.rows
        cdef Pipeline pl = pipeline_of(n, PULL_GROUP, 3)
        for step in range(pl.steps):
            if at_stage(&pl, step, 0, &sp):         # hash, prefetch the home buckets
                for i in range(sp.lo, sp.hi):
                    hs[sp.base + i - sp.lo] = feat_hash(keys[i], slots[i])
                    pst_prefetch_r(&ix.buckets[hs[sp.base + i - sp.lo] >> ix.shift])
            if at_stage(&pl, step, 1, &sp):         # probe to the first tag match, prefetch the row
                for i in range(sp.lo, sp.hi):
                    r = ix_candidate(ix, hs[sp.base + i - sp.lo], &pos)
                    cand[sp.base + i - sp.lo] = r
                    if r != PST_EMPTY:
                        prefetch_row_r(s, r, reach)
            if at_stage(&pl, step, 2, &sp):         # verify (or probe on), gather
                for i in range(sp.lo, sp.hi):
                    r = cand[sp.base + i - sp.lo]
                    if r != PST_EMPTY:
                        hdr = <RowHeader*>slab_at(s, r)
                        if hdr.key != keys[i] or hdr.slot != slots[i]:
                            r = ix_find(ix, s, hs[sp.base + i - sp.lo], keys[i], slots[i], &pos)
                    if r != PST_EMPTY:
                        pst_copy(out + i * W, row_weights(slab_at(s, r)), W)
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
        cdef const float32_t[::1] shv = shows
        cdef const float32_t[::1] ckv = clicks
        cdef const float32_t[:, ::1] gv = grads
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
        memset(p, 0xFF, ix_bytes)               # every bucket PST_EMPTY_BUCKET
        free(self.scratch)
        self.scratch = p
        self.scratch_rows = rows
        self.scratch_bytes = nbytes
        self.merge_ix = <uint64_t*>p
        self.merged = p + ix_bytes

    cdef void _new_row(self, char* p, uint64_t h) noexcept nogil:
        """Initial weights (from the feature hash and the seed) and optimizer state of row p."""
        cdef float32_t* w = row_weights(p)
        init_weights(w, self.dim, h, self.init_mix, self.init_range)
        pst_rule_init(&self.opt, w + self.width, self.width)

    cdef uint64_t _merge(self, const uint64_t* keys, const int32_t* slots, const float32_t* shows,
                         const float32_t* clicks, const float32_t* grads, Py_ssize_t n,
                         uint64_t* cap_out) noexcept nogil:
        """Push's first pass: merge duplicate features into one record each (sums in batch
        order). Returns the number of records; *cap_out is the merge index's capacity.

        Records are appended in order of first appearance; the merge index maps a feature to its
        record: 8-byte buckets (hash tag << 32 | record), open addressing, home = top bits of the
        hash, like the row index. Its buckets are small enough to stay in cache and records are
        written front to back, so a key costs a cached probe (plus a record read for a duplicate).
        Stage 0 hashes a group and prefetches its home buckets; stage 1 probes the group before it
        in batch order: a first appearance appends a record, a duplicate adds into its record.
        The index is sized for the unique fraction of the previous push (+12.5%); if it fills past
        3/4 the pass restarts at full size (it only writes push buffers; sums and counts do not
        depend on the size). The second pass empties every bucket it reads."""
        cdef int W = self.width
        cdef uint64_t* mix = self.merge_ix
        cdef uint64_t mstride = self.merge_stride
        cdef uint64_t hs[RING * PUSH_GROUP]
        cdef uint64_t est = n, dcap, dshift, dmask, nu = 0, h, b, pos, key
        cdef int32_t slot
        cdef bint full = False
        cdef Py_ssize_t step, i
        cdef Span sp
        cdef MergeHeader* m
        cdef Pipeline pl = pipeline_of(n, PUSH_GROUP, 2)
        PST_CHECK(<uint64_t>n <= self.scratch_rows)
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
            for step in range(pl.steps):
                if at_stage(&pl, step, 0, &sp):
                    for i in range(sp.lo, sp.hi):
                        h = feat_hash(keys[i], slots[i])
                        hs[sp.base + i - sp.lo] = h
                        pst_prefetch_w(&mix[h >> dshift])
                if at_stage(&pl, step, 1, &sp):
                    for i in range(sp.lo, sp.hi):
                        key = keys[i]
                        slot = slots[i]
                        h = hs[sp.base + i - sp.lo]
                        pos = h >> dshift
                        while True:
                            b = mix[pos]
                            if <uint32_t>b == PST_EMPTY:      # first appearance
                                if (nu + 1) * 4 > dcap * 3:
                                    full = True
                                    break
                                mix[pos] = (h & PST_HI) | nu
                                m = <MergeHeader*>(self.merged + nu * mstride)
                                m.key = key
                                m.slot = slot
                                m.show = shows[i]
                                m.click = clicks[i]
                                pst_copy(<float32_t*>(m + 1), grads + i * W, W)
                                nu += 1
                                break
                            if (b & PST_HI) == (h & PST_HI):
                                m = <MergeHeader*>(self.merged + <uint32_t>b * mstride)
                                if m.key == key and m.slot == slot:
                                    m.show = m.show + shows[i]
                                    m.click = m.click + clicks[i]
                                    pst_add(<float32_t*>(m + 1), grads + i * W, W)
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
        cap_out[0] = dcap
        return nu

    cdef int _push(self, const uint64_t* keys, const int32_t* slots, const float32_t* shows,
                   const float32_t* clicks, const float32_t* grads, Py_ssize_t n, int32_t hour,
                   uint64_t* res) noexcept nogil:
        """Merge (``_merge``), then per merge record (unique feature), in merge-index bucket
        order, which is hash order, as in the row index (its buckets are read front to back):
        find or create the row, or go through the pending entry and admission (``admits``), add
        the counters, run the optimizer rule, mark the row changed. 0, or -1 on OOM.

        Stage 0 takes a group's buckets from the scan (emptying them), prefetches their records
        and, from the hash's top 32 bits that a bucket keeps (all a home bucket and a tag need),
        their row index buckets; stage 1 probes to the first tag match and prefetches the whole
        row; stage 2 reads the records and resolves and updates the rows."""
        cdef uint64_t* mix = self.merge_ix
        cdef uint64_t mstride = self.merge_stride
        cdef uint64_t dcap
        cdef uint64_t nu = self._merge(keys, slots, shows, clicks, grads, n, &dcap)
        cdef uint64_t rec_at[RING * PUSH_GROUP]     # stage 0 -> 2: merge index bucket of the record
        cdef uint32_t rec[RING * PUSH_GROUP]        # stage 0 -> 2: the record
        cdef uint64_t hs[RING * PUSH_GROUP]         # stage 0 -> 1: the hash's top bits
        cdef uint32_t cand[RING * PUSH_GROUP]       # stage 1 -> 2: candidate row of the probe
        cdef uint64_t cpos[RING * PUSH_GROUP]       # stage 1 -> 2: its bucket
        cdef uint64_t ver[RING]                     # rows_ix.version when a group was probed
        cdef uint64_t scan = 0                      # next merge bucket to look at
        cdef uint64_t rows0 = self.rows_ix.size     # index sizes at the start of the pass
        cdef uint64_t pend0 = self.pend_ix.size
        cdef Py_ssize_t step, u
        cdef Span sp
        cdef uint64_t h, b, pos, ppos, key
        cdef uint32_t r, pr
        cdef int32_t slot
        cdef MergeHeader* m
        cdef RowHeader* hdr
        cdef RowHeader* pe
        cdef char* p
        cdef bint check_pend
        cdef Index* ix = &self.rows_ix
        cdef Slab* s = &self.rows
        cdef int rc = 0
        cdef Pipeline pl = pipeline_of(<Py_ssize_t>nu, PUSH_GROUP, 3)
        for step in range(pl.steps):
            check_pend = self.pend.size > 0 or self.adm.policy != POLICY_NONE
            if at_stage(&pl, step, 0, &sp):
                for u in range(sp.lo, sp.hi):
                    while <uint32_t>mix[scan] == PST_EMPTY:
                        scan += 1
                    b = mix[scan]
                    mix[scan] = PST_EMPTY_BUCKET
                    rec_at[sp.base + u - sp.lo] = scan
                    rec[sp.base + u - sp.lo] = <uint32_t>b
                    scan += 1
                    pst_prefetch_span_r(self.merged + <uint32_t>b * mstride, mstride)
                    h = b & PST_HI                  # the hash's top bits: enough to probe
                    hs[sp.base + u - sp.lo] = h
                    pst_prefetch_r(&ix.buckets[h >> ix.shift])
            if at_stage(&pl, step, 1, &sp):
                ver[sp.slot] = ix.version
                for u in range(sp.lo, sp.hi):
                    h = hs[sp.base + u - sp.lo]
                    r = ix_candidate(ix, h, &cpos[sp.base + u - sp.lo])
                    cand[sp.base + u - sp.lo] = r
                    if r != PST_EMPTY:
                        prefetch_row_w(s, r)
                    elif check_pend:
                        pst_prefetch_r(&self.pend_ix.buckets[h >> self.pend_ix.shift])
            if at_stage(&pl, step, 2, &sp):
                if (ix_grow_for_pass(ix, rows0, rec_at[sp.base], dcap, &self.oom_bytes) != 0
                        or ix_grow_for_pass(&self.pend_ix, pend0, rec_at[sp.base], dcap,
                                            &self.oom_bytes) != 0):
                    rc = -1
                    break
                for u in range(sp.lo, sp.hi):
                    m = <MergeHeader*>(self.merged + rec[sp.base + u - sp.lo] * mstride)
                    key = m.key
                    slot = m.slot
                    h = feat_hash(key, slot)        # the whole hash: initial values, admission
                    r = cand[sp.base + u - sp.lo]
                    pos = cpos[sp.base + u - sp.lo]
                    if r != PST_EMPTY:
                        hdr = <RowHeader*>slab_at(s, r)
                        if hdr.key != key or hdr.slot != slot:
                            r = ix_find(ix, s, h, key, slot, &pos)
                    elif ver[sp.slot] != ix.version:   # rows were added since the probe
                        r = ix_find(ix, s, h, key, slot, &pos)
                    if r == PST_EMPTY and (self.adm.policy != POLICY_NONE or self.pend.size > 0):
                        # not a row: the counters go to the pending entry, then admission. (Under
                        # policy none, pending entries come from a load of another policy's export.)
                        pe = pending_with(&self.pend_ix, &self.pend, h, key, slot, m.show, m.click,
                                          hour, &ppos, &pr, &self.oom_bytes)
                        if pe == NULL:
                            rc = -1
                            break
                        if not admits(&self.adm, &self.score, pe, h, hour):
                            pe.mark = MARK_CHANGED
                            res[1] += 1
                            continue
                        # admitted: the row takes the pending counters, then this push's gradient
                        p = entry_append(ix, s, h, key, slot, &pos, &self.oom_bytes)
                        if p == NULL:
                            rc = -1
                            break
                        header_set(<RowHeader*>p, key, slot, pe.show, pe.click, pe.last_seen)
                        self._new_row(p, h)
                        entry_remove(&self.pend_ix, &self.pend, ppos, pr)  # pend_ix unchanged since
                        res[0] += 1
                    else:
                        if r != PST_EMPTY:
                            p = slab_at(s, r)
                            res[2] += 1
                        else:                       # admitted at once (policy none)
                            p = entry_append(ix, s, h, key, slot, &pos, &self.oom_bytes)
                            if p == NULL:
                                rc = -1
                                break
                            header_set(<RowHeader*>p, key, slot, 0.0, 0.0, hour)
                            self._new_row(p, h)
                            res[0] += 1
                        hdr = <RowHeader*>p
                        hdr.show = hdr.show + m.show
                        hdr.click = hdr.click + m.click
                        if hour > hdr.last_seen:
                            hdr.last_seen = hour
                    pst_rule_apply(&self.opt, row_weights(p), <const float32_t*>(m + 1), self.width,
                                   m.show)
                    (<RowHeader*>p).mark = MARK_CHANGED
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
        """Decay counters, mark changed, flag evictions (MARK_EVICT); returns the flagged count."""
        cdef uint64_t i, n = 0
        cdef int64_t gap, days
        cdef float32_t rate = <float32_t>self.decay
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
                ev = score_of(&self.score, hdr.show, hdr.click) < self.del_threshold
            if ev:
                hdr.mark = MARK_CHANGED | MARK_EVICT
                n += 1
            else:
                hdr.mark = MARK_CHANGED
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
                if hdr.mark & MARK_EVICT:
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
                        nr += (<RowHeader*>slab_at(&self.rows, i)).mark & MARK_CHANGED
                    for i in range(self.pend.size):
                        npd += (<RowHeader*>slab_at(&self.pend, i)).mark & MARK_CHANGED
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
        cdef float32_t[::1] show = cols["show"]
        cdef float32_t[::1] click = cols["click"]
        cdef int32_t[::1] last = cols["last_seen"]
        cdef float32_t[:, ::1] wts = cols["weights"]
        cdef float32_t[:, ::1] opt = cols["opt_state"]
        cdef uint64_t o = start, i
        cdef RowHeader* hdr
        cdef char* p
        cdef int W = self.width, K = self.k
        with nogil:
            for i in range(self.rows.size):
                p = slab_at(&self.rows, i)
                hdr = <RowHeader*>p
                if only and not (hdr.mark & MARK_CHANGED):
                    continue
                key[o] = hdr.key
                slot[o] = hdr.slot
                show[o] = hdr.show
                click[o] = hdr.click
                last[o] = hdr.last_seen
                memcpy(&wts[o, 0], row_weights(p), W * sizeof(float32_t))
                if K:
                    memcpy(&opt[o, 0], row_weights(p) + W, K * sizeof(float32_t))
                o += 1
            for i in range(self.pend.size):
                hdr = <RowHeader*>slab_at(&self.pend, i)
                if only and not (hdr.mark & MARK_CHANGED):
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
        cdef const float32_t[::1] fv
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
        cdef const float32_t[::1] shv = arrs["show"]
        cdef const float32_t[::1] ckv = arrs["click"]
        cdef const int32_t[::1] lsv = arrs["last_seen"]
        cdef const float32_t[:, ::1] wv = arrs["weights"]
        cdef const float32_t* op = NULL
        cdef const float32_t[:, ::1] ov
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
                   const float32_t* shows, const float32_t* clicks, const int32_t* last_seen,
                   const float32_t* wts, const float32_t* opt, Py_ssize_t n,
                   uint64_t n_pend_in) noexcept nogil:
        """Apply the entries in order, in a three-stage pipeline as pull's over groups of
        LOAD_GROUP: hash a group and prefetch its buckets; probe the group before it to the first
        tag match (or empty bucket) and prefetch the entry; apply the group before that one entry
        at a time.

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
        cdef uint64_t hs[RING * LOAD_GROUP]
        cdef uint64_t rpos[RING * LOAD_GROUP]   # rows_ix bucket where the probe stopped
        cdef uint64_t ppos[RING * LOAD_GROUP]   # pend_ix bucket where the probe stopped
        cdef bint pdone[RING * LOAD_GROUP]      # ppos is set (pend_ix was probed for this entry)
        cdef uint64_t repoch[RING]              # rows_ix.epoch / pend_ix.epoch when a group was probed
        cdef uint64_t pepoch[RING]
        cdef Py_ssize_t step, i
        cdef Span sp
        cdef int j
        cdef uint64_t h, pos
        cdef uint32_t r
        cdef uint8_t st
        cdef char* p
        cdef int W = self.width, K = self.k
        cdef Index* rix = &self.rows_ix
        cdef Slab* rs = &self.rows
        cdef Index* pix = &self.pend_ix
        cdef Slab* ps = &self.pend
        cdef Pipeline pl = pipeline_of(n, LOAD_GROUP, 3)
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
        for step in range(pl.steps):
            if at_stage(&pl, step, 0, &sp):         # hash, prefetch the buckets
                for i in range(sp.lo, sp.hi):
                    h = feat_hash(keys[i], slots[i])
                    hs[sp.base + i - sp.lo] = h
                    pst_prefetch_r(&rix.buckets[h >> rix.shift])
                    if state[i] != STATE_ROW:
                        pst_prefetch_r(&pix.buckets[h >> pix.shift])
                    if filt != NULL:
                        pst_prefetch_r(&filt[h & fmask])
            if at_stage(&pl, step, 1, &sp):         # probe to the first tag match, prefetch the entry
                repoch[sp.slot] = rix.epoch
                pepoch[sp.slot] = pix.epoch
                for i in range(sp.lo, sp.hi):
                    j = sp.base + i - sp.lo
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
            if at_stage(&pl, step, 2, &sp):         # apply, in order
                for i in range(sp.lo, sp.hi):
                    j = sp.base + i - sp.lo
                    h = hs[j]
                    st = state[i]
                    # the row, if any (every state needs it)
                    r = ix_find_resumed(rix, rs, rix.epoch == repoch[sp.slot], rpos[j], h, keys[i],
                                        slots[i], &pos)
                    if st == STATE_ROW:
                        p = entry_upsert(rix, rs, r, h, keys[i], slots[i], &pos, &self.oom_bytes)
                        if p == NULL:
                            free(filt)
                            return -1
                        header_set(<RowHeader*>p, keys[i], slots[i], shows[i], clicks[i], last_seen[i])
                        pst_copy(row_weights(p), wts + i * W, W)
                        if K:
                            pst_copy(row_weights(p) + W, opt + i * K, K)
                    elif r != PST_EMPTY:
                        entry_remove(rix, rs, pos, r)
                    if st != STATE_PENDING and (ps.size == 0 or (filt != NULL
                                                               and not maybe_in(filt, fmask, h))):
                        continue            # no pending entry of this feature to drop
                    # the pending entry, if any
                    r = ix_find_resumed(pix, ps, pdone[j] and pix.epoch == pepoch[sp.slot], ppos[j],
                                        h, keys[i], slots[i], &pos)
                    if st == STATE_PENDING:
                        p = entry_upsert(pix, ps, r, h, keys[i], slots[i], &pos, &self.oom_bytes)
                        if p == NULL:
                            free(filt)
                            return -1
                        if r == PST_EMPTY and filt != NULL:
                            filt[h & fmask] |= filter_bits(h)
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
