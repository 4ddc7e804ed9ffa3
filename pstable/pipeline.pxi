# The software pipeline of the hot loops (pull, push's two passes, load). Included by _table.pyx.
#
# Keys are processed in groups; step s of a pipeline runs stage k on group s - k, so while one
# group is gathered the next is probed and the one after it is hashed, and the prefetches one
# stage issues have landed by the time the next stage reads. Per-key state a stage hands to the
# next lives in rings of RING groups (``ring[span.base + i - span.lo]`` for key i), per-group state
# in rings of RING values (``ring[span.slot]``). A loop reads::
#
#     pl = pipeline_of(n, GROUP, 3)
#     for step in range(pl.steps):
#         if at_stage(&pl, step, 0, &sp): ...  # keys sp.lo .. sp.hi - 1 of the newest group
#         if at_stage(&pl, step, 1, &sp): ...
#         if at_stage(&pl, step, 2, &sp): ...

cdef enum:
    RING = 3                    # groups in flight at most (stages of the deepest pipeline)


cdef struct Pipeline:
    Py_ssize_t n                # keys
    Py_ssize_t group            # keys per group
    Py_ssize_t ngroups
    Py_ssize_t steps            # ngroups + stages - 1


cdef struct Span:               # one group at one stage
    Py_ssize_t lo, hi           # its keys
    Py_ssize_t base             # ring offset of its first key (slot * group)
    int slot                    # its place in per-group rings, in [0, RING)


cdef inline Pipeline pipeline_of(Py_ssize_t n, Py_ssize_t group, int stages) noexcept nogil:
    cdef Pipeline pl
    PST_CHECK(1 <= stages <= RING)
    pl.n = n
    pl.group = group
    pl.ngroups = (n + group - 1) // group
    pl.steps = pl.ngroups + stages - 1
    return pl


cdef inline bint at_stage(const Pipeline* pl, Py_ssize_t step, int stage, Span* sp) noexcept nogil:
    """Whether step `step` runs stage `stage` on a group; if so, *sp is that group."""
    cdef Py_ssize_t g = step - stage
    if g < 0 or g >= pl.ngroups:
        return False
    sp.lo = g * pl.group
    sp.hi = sp.lo + pl.group if sp.lo + pl.group < pl.n else pl.n
    sp.slot = <int>(g % RING)
    sp.base = sp.slot * pl.group
    return True
