"""streamtrain's training job: config, data, the parameter-server job over MPI and the model store.

Knows nothing of Airflow (that lives in ``plugins/streamtrain_airflow``).
"""

__version__ = "0.1.0"
