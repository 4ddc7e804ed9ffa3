"""Fixtures of the pstable tests: the contract-suite case (optimizer rule x admission x eviction)."""

import pytest

from pstable_cases import CASES


@pytest.fixture(params=CASES)
def case(request):
    """(rule, admission, eviction) names of one contract-suite case."""
    return request.param
