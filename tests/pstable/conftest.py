"""Fixtures of the pstable tests: the contract-suite case (optimizer rule x admission x eviction x
show scaling).

This folder is named ``pstable`` and pytest puts ``tests/`` on ``sys.path`` (``tests/conftest.py``
imports ``support``), so ``import pstable`` would find this folder as a namespace package before the
editable install's finder is asked. Import the real package once, with ``tests/`` hidden.

``PSTABLE_BUILD_DIR=/path`` runs the suite against another build of the package (for instance the
``STREAMTRAIN_DEBUG=1`` build, made in a copy of the tree so the installed one stays optimised).
"""

import importlib
import os
import sys

import pytest


def _import_real_pstable():
    mod = sys.modules.get("pstable")
    if mod is not None and getattr(mod, "__file__", None):
        return
    sys.modules.pop("pstable", None)
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != tests_dir]
    if os.environ.get("PSTABLE_BUILD_DIR"):
        sys.path.insert(0, os.environ["PSTABLE_BUILD_DIR"])
    try:
        importlib.import_module("pstable")
    finally:
        sys.path[:] = saved


_import_real_pstable()

from pstable_cases import CASES  # noqa: E402


@pytest.fixture(params=CASES)
def case(request):
    """(rule, admission, eviction, show scaling) names of one contract-suite case."""
    return request.param
