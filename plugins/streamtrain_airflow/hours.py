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
>>> hour_str(498805)
'2026-11-26T13'
>>> partition_relpath(498805)
'dt=2026-11-26/hour=13'
"""
from __future__ import annotations

import datetime as _dt

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def data_hour(logical_date: _dt.datetime) -> int:
    """Hour index (whole hours since 1970-01-01T00 UTC) trained by the run at ``logical_date``."""
    if logical_date is None:
        raise ValueError("a streamtrain run needs a logical date (manual runs: pass one)")
    if logical_date.tzinfo is None:
        raise ValueError(f"logical date {logical_date!r} has no time zone")
    seconds = (logical_date - _EPOCH).total_seconds()
    return int(seconds // 3600)


def hour_datetime(hour: int) -> _dt.datetime:
    """UTC datetime at the start of hour index ``hour``."""
    return _EPOCH + _dt.timedelta(hours=hour)


def hour_str(hour: int) -> str:
    """``YYYY-MM-DDTHH`` spelling of an hour index (the command line's spelling)."""
    return hour_datetime(hour).strftime("%Y-%m-%dT%H")


def parse_hour(text: str) -> int:
    """Hour index of ``YYYY-MM-DDTHH`` (also accepts ``...THH:MM`` with zero minutes and a ``Z``)."""
    t = text.strip().rstrip("Z")
    for fmt in ("%Y-%m-%dT%H", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            d = _dt.datetime.strptime(t, fmt).replace(tzinfo=_dt.timezone.utc)
        except ValueError:
            continue
        if d.minute or d.second:
            raise ValueError(f"hour {text!r} is not on a whole hour")
        return data_hour(d)
    raise ValueError(f"hour {text!r} is not YYYY-MM-DDTHH")


def partition_relpath(hour: int) -> str:
    """``dt=YYYY-MM-DD/hour=HH`` of an hour index (CONTRACT §1)."""
    d = hour_datetime(hour)
    return f"dt={d:%Y-%m-%d}/hour={d:%H}"
