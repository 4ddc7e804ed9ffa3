# cython: language_level=3
"""The optimizer rules (sgd, adagrad, adam): declared from ``pst_rules.h``, where each rule's
state width, initial state and update are defined once."""

from pstable.row cimport float32_t


cdef extern from "pst_rules.h":
    enum:
        PST_RULE_SGD
        PST_RULE_ADAGRAD
        PST_RULE_ADAM

    ctypedef struct pst_rule:
        int rule                # PST_RULE_*
        bint show_scale         # divide a push's gradient sums by its shows (at least 1)
        double lr               # every rule
        double bounds           # every rule: weights clipped to [-bounds, bounds]
        double g2init           # adagrad
        double beta1            # adam
        double beta2            # adam
        double eps              # adam

    int pst_rule_width(int rule, int dim) noexcept nogil
    void pst_rule_init(const pst_rule* r, float32_t* st, int W) noexcept nogil
    void pst_rule_apply(const pst_rule* r, float32_t* w, const float32_t* g, int W,
                        float32_t push_show) noexcept nogil
