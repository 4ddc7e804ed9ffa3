"""streamtrain's Airflow side: the partition sensor, the training/save/publish operators, the demo.

Only orchestrates: every piece of work is done by ``trainer`` (the MPI job, the ``streamtrain``
command line and the model store). Importing this package touches no config, file or database, so
DAG files can import it at parse time.

The UI plugin lives in ``streamtrain_airflow.ui`` (built separately).
"""
