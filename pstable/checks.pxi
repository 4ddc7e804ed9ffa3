# Argument checks of the public methods (Python level, before anything changes): each raises
# ValueError naming the argument, what was expected and what was given. Included by _table.pyx.

cdef object _check_keys(object keys):
    if not isinstance(keys, np.ndarray):
        raise ValueError(f"keys: expected a numpy array of uint64 (or int64), got {type(keys).__name__}")
    if keys.dtype == np.int64:
        keys = keys.view(np.uint64)
    elif keys.dtype != np.uint64:
        raise ValueError(f"keys: expected dtype uint64 (or int64, viewed bit for bit), got {keys.dtype}")
    if keys.ndim != 1:
        raise ValueError(f"keys: expected a 1-D array, got shape {keys.shape}")
    if not keys.flags.c_contiguous:
        raise ValueError(f"keys: expected a C-contiguous array, got strides {keys.strides}")
    if keys.shape[0] > 2**31 - 2:
        raise ValueError(f"keys: expected at most {2**31 - 2} keys per call, got {keys.shape[0]}")
    return keys


cdef object _check_vec(str name, object a, object dtype, Py_ssize_t n):
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array of {np.dtype(dtype)}, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) (one per key), got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array, got strides {a.strides}")
    return a


cdef object _check_mat(str name, object a, Py_ssize_t n, Py_ssize_t w, str what):
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array of float32, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise ValueError(f"{name}: expected dtype float32, got {a.dtype}")
    if a.ndim != 2 or a.shape[0] != n or a.shape[1] != w:
        raise ValueError(f"{name}: expected shape ({n}, {w}) ({what}), got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array, got strides {a.strides}")
    return a


cdef int32_t _check_hour(object hour) except? -1:
    if isinstance(hour, (bool, np.bool_)) or not isinstance(hour, (int, np.integer)):
        raise ValueError(f"hour: expected an integer hour index, got {hour!r}")
    if not -2**31 <= int(hour) < 2**31:
        raise ValueError(f"hour: expected an int32 hour index, got {hour!r}")
    return <int32_t>int(hour)


cdef Py_ssize_t _first_bad(const float32_t* p, Py_ssize_t n, bint nonneg) noexcept nogil:
    """Index of the first non-finite (or, if nonneg, negative) value, or -1.

    A branch-free pass over the bit patterns (vectorised by the compiler) finds whether there is
    one; only then a second pass finds where. -0.0 counts as non-negative.
    """
    cdef const uint32_t* b = <const uint32_t*>p
    cdef uint32_t acc = 0
    cdef Py_ssize_t i
    if nonneg:
        for i in range(n):
            acc |= ((b[i] & 0x7F800000u) == 0x7F800000u) | (b[i] > 0x80000000u)
    else:
        for i in range(n):
            acc |= (b[i] & 0x7F800000u) == 0x7F800000u
    if not acc:
        return -1
    for i in range(n):
        if not isfinite(p[i]) or (nonneg and p[i] < 0):
            return i
    return -1
