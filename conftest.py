"""Loaded before any test or doctest module (``tests/``, ``trainer/``, ``pstable/``, ``plugins/``).

Importing the plugin package's modules (their doctests, the UI tests) imports Airflow, which reads
and creates ``AIRFLOW_HOME`` (``~/airflow`` by default) on import: point it at a throw-away
folder first, so the suite never touches the user's Airflow.
"""
import os
import sys
import tempfile

if "airflow" not in sys.modules and "AIRFLOW_HOME" not in os.environ:
    _home = tempfile.mkdtemp(prefix="streamtrain-test-airflow-home-")
    os.environ["AIRFLOW_HOME"] = _home
    os.environ["AIRFLOW_CONFIG"] = os.path.join(_home, "airflow.cfg")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
