/* The optimizer rules of the sparse table, one definition each: the width of its per-row state,
 * its initial state and its update of one row (PaddlePaddle's Sparse*SGDRule family).
 *
 * A row's floats are w[0] (the 1-wide weight), w[1 .. W-1] (the embedding, W = 1 + dim), then
 * st[0 .. width) (the rule's state, right after the weights). An update runs on g / div, where
 * div is the push's shows under show_scale (at least 1) and 1 otherwise (dividing by 1 is exact:
 * the rule sees g bit for bit), and clips every weight to [-bounds, bounds]. Each rule keeps the
 * operations, and their order, of tests/pstable/pstable_reference.py, so the two agree bit for
 * bit. Plain C with restrict so the weight loops vectorise and the clip compiles to min/max.
 * Declared for Cython in rules.pxd. */
#ifndef PSTABLE_PST_RULES_H
#define PSTABLE_PST_RULES_H

#include <math.h>

enum { PST_RULE_SGD = 0, PST_RULE_ADAGRAD = 1, PST_RULE_ADAM = 2 };

typedef struct {
    int rule;          /* PST_RULE_* */
    int show_scale;    /* divide a push's gradient sums by its shows (at least 1) */
    double lr;         /* every rule: learning rate */
    double bounds;     /* every rule: weights are clipped to [-bounds, bounds] */
    double g2init;     /* adagrad: initial_g2sum */
    double beta1;      /* adam */
    double beta2;      /* adam */
    double eps;        /* adam */
} pst_rule;

static inline double pst_clip(double x, double b) {
    x = x > b ? b : x;
    return x < -b ? -b : x;
}

/* ---- sgd: w -= lr * g; no state ---------------------------------------------------------- */

static inline int pst_sgd_width(int dim) {
    (void)dim;
    return 0;
}

static inline void pst_sgd_init(const pst_rule *r, float *st, int W) {
    (void)r, (void)st, (void)W;
}

static inline void pst_sgd_apply(const pst_rule *r, float *restrict w, float *restrict st,
                                 const float *restrict g, int W, double div) {
    const double lr = r->lr, b = r->bounds;
    (void)st;
    for (int j = 0; j < W; j++) w[j] = (float)pst_clip((double)w[j] - lr * ((double)g[j] / div), b);
}

/* ---- adagrad (Paddle's SparseAdaGradSGDRule): st[0] = g2sum of w, st[1] = g2sum of the
 * embedding (the mean of its squared gradients is added); step = lr * g * sqrt(g2init /
 * (g2init + g2sum)), g2sum taken before this push's gradient is added ----------------------- */

static inline int pst_adagrad_width(int dim) {
    (void)dim;
    return 2;
}

static inline void pst_adagrad_init(const pst_rule *r, float *st, int W) {
    (void)r, (void)W;
    st[0] = 0.0f;
    st[1] = 0.0f;
}

static inline void pst_adagrad_apply(const pst_rule *r, float *restrict w, float *restrict st,
                                     const float *restrict g, int W, double div) {
    const double lr = r->lr, b = r->bounds, g2init = r->g2init;
    double scale = sqrt(g2init / (g2init + st[0]));
    double g0 = (double)g[0] / div;
    w[0] = (float)pst_clip((double)w[0] - lr * g0 * scale, b);
    st[0] = (float)((double)st[0] + g0 * g0);
    scale = sqrt(g2init / (g2init + st[1]));
    for (int j = 1; j < W; j++) w[j] = (float)pst_clip((double)w[j] - lr * ((double)g[j] / div) * scale, b);
    double acc = 0.0;
    for (int j = 1; j < W; j++) acc += ((double)g[j] / div) * ((double)g[j] / div);
    st[1] = (float)((double)st[1] + acc / (double)(W - 1));
}

/* ---- adam (Paddle's SparseAdamSGDRule): st[0 .. W) = m, st[W .. 2W) = v, st[2W] = beta1^t,
 * st[2W+1] = beta2^t (starting at beta1, beta2) ------------------------------------------- */

static inline int pst_adam_width(int dim) { return 2 * (1 + dim) + 2; }

static inline void pst_adam_init(const pst_rule *r, float *st, int W) {
    for (int j = 0; j < 2 * W; j++) st[j] = 0.0f;
    st[2 * W] = (float)r->beta1;
    st[2 * W + 1] = (float)r->beta2;
}

static inline void pst_adam_apply(const pst_rule *r, float *restrict w, float *restrict st,
                                  const float *restrict g, int W, double div) {
    const double b1 = r->beta1, b2 = r->beta2, b = r->bounds;
    const double b1p = st[2 * W], b2p = st[2 * W + 1];
    const double lr_t = r->lr * sqrt(1.0 - b2p) / (1.0 - b1p);
    const double eps_t = sqrt(1.0 - b2p) * r->eps;
    for (int j = 0; j < W; j++) {
        double gj = (double)g[j] / div;
        float m = (float)(b1 * st[j] + (1.0 - b1) * gj);
        float v = (float)(b2 * st[W + j] + (1.0 - b2) * gj * gj);
        st[j] = m;
        st[W + j] = v;
        w[j] = (float)pst_clip((double)w[j] - lr_t * (m / (sqrt((double)v) + eps_t)), b);
    }
    st[2 * W] = (float)(b1p * b1);
    st[2 * W + 1] = (float)(b2p * b2);
}

/* ---- by rule id --------------------------------------------------------------------------- */

/* floats of state per row, or -1 for an unknown rule */
static inline int pst_rule_width(int rule, int dim) {
    switch (rule) {
    case PST_RULE_SGD: return pst_sgd_width(dim);
    case PST_RULE_ADAGRAD: return pst_adagrad_width(dim);
    case PST_RULE_ADAM: return pst_adam_width(dim);
    default: return -1;
    }
}

/* the state of a new row: st = the row's W weights + W */
static inline void pst_rule_init(const pst_rule *r, float *st, int W) {
    switch (r->rule) {
    case PST_RULE_SGD: pst_sgd_init(r, st, W); break;
    case PST_RULE_ADAGRAD: pst_adagrad_init(r, st, W); break;
    default: pst_adam_init(r, st, W); break;
    }
}

/* one push's merged gradient g (summed over push_show occurrences) applied to the row's
 * weights w and its state (right after them) */
static inline void pst_rule_apply(const pst_rule *r, float *w, const float *g, int W,
                                  float push_show) {
    double div = r->show_scale && push_show > 1.0f ? (double)push_show : 1.0;
    switch (r->rule) {
    case PST_RULE_SGD: pst_sgd_apply(r, w, w + W, g, W, div); break;
    case PST_RULE_ADAGRAD: pst_adagrad_apply(r, w, w + W, g, W, div); break;
    default: pst_adam_apply(r, w, w + W, g, W, div); break;
    }
}

#endif /* PSTABLE_PST_RULES_H */
