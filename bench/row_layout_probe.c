/* Pull speed of three table layouts, in plain C, 1e7 rows, dim 8 (w + 8 floats), 1M-key batches.
 *
 * Asks one question: would another row layout let pstable's pull go much faster on this machine?
 * Each layout runs the same software-pipelined lookup as pstable's pull (groups of 32 keys:
 * hash + prefetch, probe + prefetch, verify + copy). Keys have slot 0; no Python.
 *
 *   index+slab 72 B   pstable's layout: 8-byte index buckets (tag << 32 | row id, 2^24 of them)
 *                     and 72-byte rows (28-byte header, 9 weights, 2 adagrad sums) in a slab
 *   index+slab 64 B   the same with 64-byte rows, one cache line each: the best any compaction of
 *                     the dim-8 adagrad row (72 bytes) to one line could do
 *   inline rows       no index: 72-byte rows in the hash slots themselves (linear probing, load
 *                     factor 0.75), with a 1-byte tag per slot in a separate control array
 *
 * Build and run (prints medians of 7 rounds, CPU time; the order of the layouts rotates):
 *     cc -O2 -march=native -o /tmp/row_layout_probe bench/row_layout_probe.c -lm
 *     /tmp/row_layout_probe [rows (1e7)] [batch (1e6)]
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static size_t N_ROWS = 10000000, BATCH = 1000000;   /* argv[1], argv[2] */
#define GROUP 32
#define ROUNDS 7
#define WIDTH 9
#define EMPTY 0xFFFFFFFFu

typedef struct { uint64_t key; int32_t slot, last_seen; float show, click; uint32_t mark;
                 float w[WIDTH]; float opt[2]; } Row72;
typedef struct { uint64_t key; int32_t slot, last_seen; float show, click; uint32_t mark;
                 float w[WIDTH]; } Row64;     /* 64 bytes: no room for the optimizer state */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void *huge_alloc(size_t bytes) {   /* 2 MiB aligned, huge pages, every page written */
    size_t rounded = (bytes + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    void *p = aligned_alloc(2u << 20, rounded);
    madvise(p, rounded, MADV_HUGEPAGE);
    memset(p, 0, rounded);
    return p;
}

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- index + slab (row size a parameter) ---- */
static uint64_t *buckets;
static int SHIFT;               /* 2^(64 - SHIFT) buckets, load factor 0.3-0.6 as in pstable */
static uint64_t MASK;

static void index_insert(uint64_t key, uint32_t row) {
    uint64_t h = mix64(key), pos = h >> SHIFT;
    while ((uint32_t)buckets[pos] != EMPTY) pos = (pos + 1) & MASK;
    buckets[pos] = (h >> 32 << 32) | row;
}

static const Row64 *row_at(const char *slab, size_t stride, uint32_t row) {
    return (const Row64 *)(slab + (size_t)row * stride);  /* Row72 starts as Row64 does */
}

static uint32_t index_find(const char *slab, size_t stride, uint64_t h, uint64_t key) {
    for (uint64_t pos = h >> SHIFT; (uint32_t)buckets[pos] != EMPTY; pos = (pos + 1) & MASK) {
        uint32_t row = (uint32_t)buckets[pos];    /* tags collide: 1e7 keys share ~1e4 tags */
        if ((buckets[pos] >> 32) == (h >> 32) && row_at(slab, stride, row)->key == key)
            return row;
    }
    return EMPTY;
}

static void pull_index(const char *slab, size_t stride, const uint64_t *keys, float *out, size_t n) {
    uint64_t hs[3 * GROUP];
    uint32_t cand[3 * GROUP];
    size_t ngroups = (n + GROUP - 1) / GROUP;
    for (size_t g = 0; g < ngroups + 2; g++) {
        if (g < ngroups) {                              /* hash, prefetch the home bucket */
            for (size_t i = g * GROUP; i < (g + 1) * GROUP && i < n; i++) {
                uint64_t h = mix64(keys[i]);
                hs[(g % 3) * GROUP + i % GROUP] = h;
                __builtin_prefetch(&buckets[h >> SHIFT]);
            }
        }
        if (g >= 1 && g <= ngroups) {                   /* probe to the tag, prefetch the row */
            size_t k = g - 1;
            for (size_t i = k * GROUP; i < (k + 1) * GROUP && i < n; i++) {
                uint64_t h = hs[(k % 3) * GROUP + i % GROUP], pos = h >> SHIFT;
                uint32_t row = EMPTY;
                for (;; pos = (pos + 1) & MASK) {
                    uint64_t b = buckets[pos];
                    if ((uint32_t)b == EMPTY) break;
                    if ((b >> 32) == (h >> 32)) { row = (uint32_t)b; break; }
                }
                cand[(k % 3) * GROUP + i % GROUP] = row;
                if (row != EMPTY) {
                    const char *p = (const char *)row_at(slab, stride, row);
                    __builtin_prefetch(p);
                    __builtin_prefetch(p + 63);         /* header + weights: 64 bytes */
                }
            }
        }
        if (g >= 2) {                                   /* verify, copy the weights */
            size_t k = g - 2;
            for (size_t i = k * GROUP; i < (k + 1) * GROUP && i < n; i++) {
                uint32_t row = cand[(k % 3) * GROUP + i % GROUP];
                if (row != EMPTY && row_at(slab, stride, row)->key != keys[i])
                    row = index_find(slab, stride, hs[(k % 3) * GROUP + i % GROUP], keys[i]);
                if (row != EMPTY) memcpy(out + i * WIDTH, row_at(slab, stride, row)->w, WIDTH * sizeof(float));
                else memset(out + i * WIDTH, 0, WIDTH * sizeof(float));
            }
        }
    }
}

/* ---- inline rows: the hash slots hold the rows; 1-byte tags apart (0 = empty) ---- */
static uint8_t *tags;
static Row72 *slots;
static uint64_t n_slots;

static uint64_t home_slot(uint64_t h) { return (uint64_t)(((__uint128_t)h * n_slots) >> 64); }
static uint8_t tag_of(uint64_t h) { return 0x80 | (h & 0x7F); }

static void inline_insert(const Row72 *row) {
    uint64_t h = mix64(row->key), pos = home_slot(h);
    while (tags[pos]) pos = pos + 1 == n_slots ? 0 : pos + 1;
    tags[pos] = tag_of(h);
    slots[pos] = *row;
}

static uint64_t inline_find_after(uint64_t pos, uint64_t h, uint64_t key) {  /* tag collided */
    for (pos = pos + 1 == n_slots ? 0 : pos + 1; tags[pos]; pos = pos + 1 == n_slots ? 0 : pos + 1)
        if (tags[pos] == tag_of(h) && slots[pos].key == key) return pos;
    return UINT64_MAX;
}

static void pull_inline(const uint64_t *keys, float *out, size_t n) {
    uint64_t hs[3 * GROUP], cand[3 * GROUP];
    size_t ngroups = (n + GROUP - 1) / GROUP;
    for (size_t g = 0; g < ngroups + 2; g++) {
        if (g < ngroups) {                              /* hash, prefetch tag and home row */
            for (size_t i = g * GROUP; i < (g + 1) * GROUP && i < n; i++) {
                uint64_t h = mix64(keys[i]), pos = home_slot(h);
                hs[(g % 3) * GROUP + i % GROUP] = h;
                __builtin_prefetch(&tags[pos]);
                __builtin_prefetch((char *)&slots[pos]);
                __builtin_prefetch((char *)&slots[pos] + 63);
            }
        }
        if (g >= 1 && g <= ngroups) {                   /* scan tags, prefetch a non-home row */
            size_t k = g - 1;
            for (size_t i = k * GROUP; i < (k + 1) * GROUP && i < n; i++) {
                uint64_t h = hs[(k % 3) * GROUP + i % GROUP], home = home_slot(h), pos = home;
                uint64_t found = UINT64_MAX;
                for (;; pos = pos + 1 == n_slots ? 0 : pos + 1) {
                    if (!tags[pos]) break;
                    if (tags[pos] == tag_of(h)) { found = pos; break; }
                }
                cand[(k % 3) * GROUP + i % GROUP] = found;
                if (found != UINT64_MAX && found != home) {
                    __builtin_prefetch((char *)&slots[found]);
                    __builtin_prefetch((char *)&slots[found] + 63);
                }
            }
        }
        if (g >= 2) {
            size_t k = g - 2;
            for (size_t i = k * GROUP; i < (k + 1) * GROUP && i < n; i++) {
                uint64_t pos = cand[(k % 3) * GROUP + i % GROUP];
                if (pos != UINT64_MAX && slots[pos].key != keys[i])
                    pos = inline_find_after(pos, hs[(k % 3) * GROUP + i % GROUP], keys[i]);
                if (pos != UINT64_MAX)
                    memcpy(out + i * WIDTH, slots[pos].w, sizeof slots[pos].w);
                else
                    memset(out + i * WIDTH, 0, WIDTH * sizeof(float));
            }
        }
    }
}

static void run_layout(int layout, const Row72 *slab72, const Row64 *slab64, const uint64_t *query,
                       float *out) {
    if (layout == 0) pull_index((const char *)slab72, sizeof(Row72), query, out, BATCH);
    else if (layout == 1) pull_index((const char *)slab64, sizeof(Row64), query, out, BATCH);
    else pull_inline(query, out, BATCH);
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc > 1) N_ROWS = strtoul(argv[1], NULL, 10);
    if (argc > 2) BATCH = strtoul(argv[2], NULL, 10);
    int log2_buckets = 6;
    while ((1ul << log2_buckets) * 3 / 5 < N_ROWS) log2_buckets++;
    SHIFT = 64 - log2_buckets;
    MASK = (1ul << log2_buckets) - 1;
    uint64_t *keys = malloc(N_ROWS * sizeof *keys);
    for (size_t i = 0; i < N_ROWS; i++) keys[i] = mix64(i * 7919 + 12345);

    buckets = huge_alloc((MASK + 1) * sizeof *buckets);
    memset(buckets, 0xFF, (MASK + 1) * sizeof *buckets);
    Row72 *slab72 = huge_alloc(N_ROWS * sizeof(Row72));
    Row64 *slab64 = huge_alloc(N_ROWS * sizeof(Row64));
    for (size_t i = 0; i < N_ROWS; i++) {
        slab72[i].key = slab64[i].key = keys[i];
        slab72[i].w[0] = slab64[i].w[0] = (float)i;
        index_insert(keys[i], (uint32_t)i);
    }
    n_slots = (uint64_t)(N_ROWS / 0.75);
    tags = huge_alloc(n_slots);
    slots = huge_alloc(n_slots * sizeof(Row72));
    for (size_t i = 0; i < N_ROWS; i++) inline_insert(&slab72[i]);

    uint64_t *query = malloc(BATCH * sizeof *query);
    float *out = malloc(BATCH * WIDTH * sizeof *out), *ref = malloc(BATCH * WIDTH * sizeof *ref);
    printf("# %zu rows, dim 8, batches of %zu keys, medians of %d rounds (CPU time), M keys/s\n",
           N_ROWS, BATCH, ROUNDS);
    printf("%-8s %16s %16s %12s\n", "keys", "index+slab 72 B", "index+slab 64 B", "inline rows");
    for (int zipf = 0; zipf <= 1; zipf++) {
        uint64_t s = 42;
        for (size_t i = 0; i < BATCH; i++) {           /* uniform, or Pareto ranks (a = 1.1) */
            s = mix64(s + i);
            double u = (double)(s >> 11) * (1.0 / 9007199254740992.0);
            size_t rank = zipf ? (size_t)pow(u, -1.0 / 0.1) - 1 : s;
            query[i] = keys[mix64(rank % N_ROWS) % N_ROWS];
        }
        for (int layout = 0; layout < 3; layout++) {    /* every layout reads the same rows */
            run_layout(layout, slab72, slab64, query, out);
            if (layout == 0) memcpy(ref, out, BATCH * WIDTH * sizeof *out);
            else if (memcmp(ref, out, BATCH * WIDTH * sizeof *out)) {
                fprintf(stderr, "layout %d read other rows than layout 0\n", layout);
                return 1;
            }
        }
        double t[3][ROUNDS];
        for (int r = 0; r < ROUNDS; r++) {
            for (int k = 0; k < 3; k++) {               /* rotate the order: no layout always
                                                           runs after another's cache traffic */
                int layout = (r + k) % 3;
                double t0 = cpu_seconds();
                run_layout(layout, slab72, slab64, query, out);
                t[layout][r] = cpu_seconds() - t0;
            }
        }
        for (int k = 0; k < 3; k++) qsort(t[k], ROUNDS, sizeof(double), by_value);
        printf("%-8s %16.1f %16.1f %12.1f\n", zipf ? "zipf" : "uniform", BATCH / t[0][ROUNDS / 2] / 1e6,
               BATCH / t[1][ROUNDS / 2] / 1e6, BATCH / t[2][ROUNDS / 2] / 1e6);
    }
    return 0;
}
