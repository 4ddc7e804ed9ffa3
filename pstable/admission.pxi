# Admission (``admission.pxd``): where it is decided whether a feature seen in a push gets a row.
# Included by _table.pyx; push (``SparseTable._push``) keeps a feature's counters in its pending
# entry until ``admits`` says yes.

cdef inline double admit_draw(uint64_t h, uint64_t admit_mix, int32_t hour) noexcept nogil:
    """u(feature, seed, hour) in [0, 1): one draw per feature and data hour (mirrored by
    tests/pstable/pstable_reference.py)."""
    cdef uint64_t v = pst_mix64(pst_mix64(h ^ admit_mix) + <uint64_t>(<uint32_t>hour) * PST_GOLDEN)
    return <double>(v >> 11) * (1.0 / 9007199254740992.0)


cdef inline bint admits(const Admission* a, const Score* sc, const RowHeader* pe, uint64_t h,
                        int32_t hour) noexcept nogil:
    """Whether the pending feature pe (hash h), its counters including this push's, is admitted
    in data hour `hour`."""
    if a.policy == POLICY_NONE:
        return True
    if a.policy == POLICY_COUNT:
        return pe.show >= a.count_min
    if a.policy == POLICY_PROB:
        return admit_draw(h, a.admit_mix, hour) < a.prob
    return score_of(sc, pe.show, pe.click) >= a.threshold


cdef inline RowHeader* pending_with(Index* pix, Slab* ps, uint64_t h, uint64_t key, int32_t slot,
                                    float32_t show, float32_t click, int32_t hour,
                                    uint64_t* pos, uint32_t* at, uint64_t* oom) noexcept nogil:
    """The pending entry of (key, slot), created if new, after this push's counters are added;
    *pos and *at are its bucket and entry id. NULL when memory ran out."""
    cdef RowHeader* pe
    cdef uint32_t r = ix_find(pix, ps, h, key, slot, pos)
    if r == PST_EMPTY:
        pe = <RowHeader*>entry_append(pix, ps, h, key, slot, pos, oom)
        if pe == NULL:
            return NULL
        r = <uint32_t>(ps.size - 1)
        header_set(pe, key, slot, 0.0, 0.0, hour)
    else:
        pe = <RowHeader*>slab_at(ps, r)
    pe.show = pe.show + show
    pe.click = pe.click + click
    if hour > pe.last_seen:
        pe.last_seen = hour
    at[0] = r
    return pe
