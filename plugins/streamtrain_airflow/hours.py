"""Which data hour a DAG run trains.

``@hourly`` in Airflow 3 is a :class:`CronTriggerTimetable`: a run's logical date is the instant the
cron fired, and ``data_interval_start == data_interval_end == logical_date`` (verified on
Airflow 3.3.2). A run with logical date ``2026-11-26T13:00Z`` trains partition
``dt=2026-11-26/hour=13`` (the hour that *starts* at the logical date); its sensor waits for that
hour's ``_SUCCESS``, which lands after 14:00. The same rule holds under the Airflow-2-style
``CronDataIntervalTimetable`` (logical date = data_interval_start), so runs, backfill ranges and
partitions always carry the same label.

>>> import pendulum
>>> data_hour(pendulum.datetime(2026, 11, 26, 13, 0, tz="UTC"))
498805
"""
from __future__ import annotations

import datetime as _dt

from trainer.hours import hour_of_datetime


def data_hour(logical_date: _dt.datetime) -> int:
    """Hour index (whole hours since 1970-01-01T00 UTC) trained by the run at ``logical_date``."""
    if logical_date is None:
        raise ValueError("a streamtrain run needs a logical date (manual runs: pass one)")
    return hour_of_datetime(logical_date)
