"""Fixtures shared by every test folder (helpers live in ``tests/support.py``)."""
import pytest

from support import write_model_config


@pytest.fixture
def model_config(tmp_path):
    """`model_config(servers=1, workers=1, extra="")` -> path of a small model config."""
    def make(**kw):
        return write_model_config(tmp_path / "m", **kw)
    return make
