"""Builds the pstable Cython extension.

Compiler directives live here, once. ``STREAMTRAIN_DEBUG=1 pip install -e .`` builds with bounds
and wraparound checks on, so one test run covers the compiled loops with checks.
"""
import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("STREAMTRAIN_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

# One extension module, built from units: _table.pyx includes the .pxi files and cimports the
# .pxd headers, which declare the C headers; editing any of them rebuilds it.
UNITS = sorted(str(p) for pattern in ("*.pxd", "*.pxi", "*.h") for p in Path("pstable").glob(pattern))

extensions = [
    Extension(
        "pstable._table",
        ["pstable/_table.pyx"],
        depends=UNITS,
        include_dirs=["pstable", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        + ([("PSTABLE_DEBUG", "1")] if DEBUG else []),  # row/bucket index checks in raw-pointer loops
        extra_compile_args=["-O3"] if not DEBUG else ["-O0", "-g"],
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
