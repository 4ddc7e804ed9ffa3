"""Fixtures shared by every test folder (helpers live in ``tests/support.py``)."""
from pathlib import Path

import pytest

from tests.support import write_model_config


@pytest.fixture
def model_config(tmp_path):
    """`model_config(servers=1, workers=1, extra="")` -> path of a small model config."""
    def make(**kw):
        return write_model_config(tmp_path / "m", **kw)
    return make


TESTS = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    """Split ``slow``: tests/airflow's are ``airflow_e2e``, the others but the browser's, the
    cluster's and the image build's are ``mpi``."""
    for item in items:
        if not item.get_closest_marker("slow") or any(
                item.get_closest_marker(kind) for kind in ("cluster", "docker")):
            continue
        path = Path(item.path)
        if TESTS / "airflow" in path.parents:
            item.add_marker(pytest.mark.airflow_e2e)
        elif TESTS / "ui" not in path.parents:
            item.add_marker(pytest.mark.mpi)
