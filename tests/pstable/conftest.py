"""Fixtures of the pstable tests: the contract-suite case (optimizer rule x admission x eviction x
show scaling).

``PSTABLE_BUILD_DIR=/path`` runs the suite against another build of the package (for instance the
``STREAMTRAIN_DEBUG=1`` build, made in a copy of the tree so the installed one stays optimised).
"""

import os
import sys

import pytest


if os.environ.get("PSTABLE_BUILD_DIR"):  # before the first import of pstable
    sys.path.insert(0, os.environ["PSTABLE_BUILD_DIR"])

from tests.pstable.pstable_cases import CASES  # noqa: E402 (after the build dir is on sys.path)


@pytest.fixture(params=CASES)
def case(request):
    """(rule, admission, eviction, show scaling) names of one contract-suite case."""
    return request.param
