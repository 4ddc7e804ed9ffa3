"""Loader for Airflow's plugins folder (``<repo>/plugins``): the plugin lives in the
``streamtrain_airflow`` package (installed from ``plugins/streamtrain_airflow``)."""
from streamtrain_airflow.plugin import StreamtrainPlugin

__all__ = ["StreamtrainPlugin"]
