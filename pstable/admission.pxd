# cython: language_level=3
"""Admission (准入) of unseen features: the policy and its parameters. Where admission is
decided: ``admits`` in ``admission.pxi``."""

from libc.stdint cimport uint64_t


cdef enum Policy:
    POLICY_NONE = 0             # admitted on first push
    POLICY_COUNT = 1            # count_filter: once its accumulated shows reach count_min
    POLICY_PROB = 2             # probability: if its draw for the hour is below prob
    POLICY_SHOW_CLICK = 3       # show_click: once its show/click score reaches threshold


cdef struct Admission:
    Policy policy
    double count_min            # count_filter
    double prob                 # probability
    double threshold            # show_click
    uint64_t admit_mix          # probability: mix64(seed ^ PST_ADMIT_SALT), the stream of draws
