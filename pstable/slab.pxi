# The slab (``slab.pxd``): row addresses, prefetch, append, trim, free. Included by _table.pyx.

cdef inline char* slab_at(const Slab* s, uint64_t i) noexcept nogil:
    PST_CHECK(i < s.size)
    return s.chunks[i >> PST_CHUNK_SHIFT] + (i & PST_CHUNK_MASK) * s.stride


cdef inline void prefetch_row_w(const Slab* s, uint64_t i) noexcept nogil:
    pst_prefetch_span_w(slab_at(s, i), s.stride)


cdef inline void prefetch_row_r(const Slab* s, uint64_t i, uint64_t nbytes) noexcept nogil:
    """The first nbytes of row i (pull reads the header and the weights only)."""
    pst_prefetch_span_r(slab_at(s, i), nbytes)


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


cdef inline uint64_t slab_footprint(const Slab* s) noexcept nogil:
    """Bytes the slab holds: its blocks and its pointer arrays."""
    return s.alloc_bytes + s.cap_chunks * sizeof(char*) + s.cap_blocks * (sizeof(char*) + sizeof(uint64_t))


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
