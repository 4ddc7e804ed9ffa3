"""Fixtures of the pstable tests: the contract-suite case (optimizer rule x admission x eviction).

This folder is named ``pstable`` and pytest puts ``tests/`` on ``sys.path`` (``tests/conftest.py``
imports ``support``), so ``import pstable`` would find this folder as a namespace package before the
editable install's finder is asked. Import the real package once, with ``tests/`` hidden.
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
    try:
        importlib.import_module("pstable")
    finally:
        sys.path[:] = saved


_import_real_pstable()

from pstable_cases import CASES  # noqa: E402


@pytest.fixture(params=CASES)
def case(request):
    """(rule, admission, eviction) names of one contract-suite case."""
    return request.param
