/* pstable's inline C kernels: the constants that must not be Python ints, the debug check, big
 * allocations, prefetch hints, the 64-bit mixer and the small row copies of pull, push and load.
 * Declared for Cython in row.pxd; the optimizer rules are in pst_rules.h. */
#ifndef PSTABLE_PST_KERNELS_H
#define PSTABLE_PST_KERNELS_H

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define PST_EMPTY ((uint32_t)0xFFFFFFFFu)             /* row id of an empty index bucket */
#define PST_EMPTY_BUCKET (~(uint64_t)0)               /* an empty bucket (what memset 0xFF leaves) */
#define PST_HI ((uint64_t)0xFFFFFFFF00000000ull)      /* the tag half of a bucket */
#define PST_GOLDEN ((uint64_t)0x9E3779B97F4A7C15ull)
/* salts: the index hash must not correlate with trainer.sharding.mix64 (same finaliser) */
#define PST_INDEX_SALT ((uint64_t)0x5851F42D4C957F2Dull)
#define PST_INIT_SALT ((uint64_t)0x243F6A8885A308D3ull)
#define PST_ADMIT_SALT ((uint64_t)0x13198A2E03707344ull)
#define PST_CHUNK_SHIFT 14                            /* a slab chunk holds 2^14 rows */
#define PST_CHUNK_ROWS ((uint64_t)1 << PST_CHUNK_SHIFT)
#define PST_CHUNK_MASK (PST_CHUNK_ROWS - 1)

#ifdef PSTABLE_DEBUG /* STREAMTRAIN_DEBUG=1 build: check row ids in the raw-pointer loops */
#include <stdio.h>
#define PST_CHECK(cond)                                                                          \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "pstable: check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);  \
            abort();                                                                             \
        }                                                                                        \
    } while (0)
#else
#define PST_CHECK(cond) ((void)0)
#endif

/* 2 MiB aligned and advised as transparent huge pages when that big (random row access is
 * TLB-bound otherwise); free() releases it */
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

/* Small row copies / sums: restrict lets the compiler vectorise. gcc turns a copy or zeroing
 * loop (even a scalar tail loop) into a memcpy / memset call per row; this SSE copy (4 floats at
 * a time, the last 4 again, overlapping; rows narrower than 4 by halves) makes no call. It is no
 * faster than the call (docs/pstable.md, "Layout and speed"): kept as the one copy helper of
 * pull, push and load. */
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

static inline void pst_prefetch_r(const void *p) { __builtin_prefetch(p, 0, 3); }
static inline void pst_prefetch_w(const void *p) { __builtin_prefetch(p, 1, 3); }

/* every cache line of [p, p + nbytes), nbytes >= 1 */
static inline void pst_prefetch_span_r(const void *p, uint64_t nbytes) {
    const char *c = (const char *)p;
    for (uint64_t off = 0; off < nbytes; off += 64) pst_prefetch_r(c + off);
    pst_prefetch_r(c + nbytes - 1);
}
static inline void pst_prefetch_span_w(const void *p, uint64_t nbytes) {
    const char *c = (const char *)p;
    for (uint64_t off = 0; off < nbytes; off += 64) pst_prefetch_w(c + off);
    pst_prefetch_w(c + nbytes - 1);
}

/* splitmix64 finaliser */
static inline uint64_t pst_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * (uint64_t)0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * (uint64_t)0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#endif /* PSTABLE_PST_KERNELS_H */
