# cython: language_level=3
"""The slab: rows in fixed-size chunks of ``PST_CHUNK_ROWS`` rows, so growth never copies rows.

Row i is at ``chunks[i >> PST_CHUNK_SHIFT] + (i & PST_CHUNK_MASK) * stride``. Chunks are carved
from blocks of 1..16 chunks (at most 1/8 of the slab, so unused capacity stays small); blocks of
2 MiB or more are 2 MiB aligned and advised as transparent huge pages (``pst_big_alloc``).
The functions are in ``slab.pxi``.
"""

from libc.stdint cimport uint64_t


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
