"""Data hours as integers.

A data hour is an ``int`` **hour index**: whole hours since 1970-01-01T00:00 UTC. The command line
and the logs spell it ``YYYY-MM-DDTHH`` (UTC); the partition of hour ``h`` lives at
``<data_root>/dt=YYYY-MM-DD/hour=HH/``. Time in streamtrain is logical: these are *data* hours,
never the wall clock.

>>> h = hour_index("2026-11-26T13")
>>> h
498805
>>> hour_str(h + 11)
'2026-11-27T00'
>>> partition_relpath(h)
'dt=2026-11-26/hour=13'
>>> hour_of_relpath("dt=2026-11-26/hour=13") == h
True
>>> day_of(h), hour_of_day(h)
(20783, 13)
"""

from __future__ import annotations

import datetime as _dt
import re

__all__ = [
    "HOUR_FORMAT",
    "hour_index",
    "hour_str",
    "partition_relpath",
    "hour_of_relpath",
    "day_of",
    "hour_of_day",
]

#: ``strftime`` spelling of an hour (UTC).
HOUR_FORMAT = "%Y-%m-%dT%H"

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_HOUR_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2})")
_RELPATH_RE = re.compile(r"dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/?")
# datetime covers years 1..9999; keep hours inside that so hour_str never overflows.
_MIN_HOUR = -(1969 * 365 + 1969 // 4 - 1969 // 100 + 1969 // 400) * 24
_MAX_HOUR = int((_dt.datetime(9999, 12, 31, 23, tzinfo=_dt.timezone.utc) - _EPOCH).total_seconds()) // 3600


def hour_index(text: str) -> int:
    """Parse ``YYYY-MM-DDTHH`` (UTC) into an hour index.

    Parameters
    ----------
    text : str
        The hour, e.g. ``"2026-11-26T13"``. Nothing else is accepted (no minutes, no zone).

    Returns
    -------
    int
        Whole hours since 1970-01-01T00 UTC.

    Raises
    ------
    ValueError
        Naming the bad value and the expected spelling.

    Examples
    --------
    >>> hour_index("1970-01-01T00"), hour_index("1970-01-02T01")
    (0, 25)
    >>> hour_index("2026-11-26 13")
    Traceback (most recent call last):
    ...
    ValueError: bad hour '2026-11-26 13': expected YYYY-MM-DDTHH (UTC), e.g. 2026-11-26T13
    """
    if not isinstance(text, str):
        raise ValueError(f"bad hour {text!r}: expected a string YYYY-MM-DDTHH (UTC), got {type(text).__name__}")
    m = _HOUR_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"bad hour {text!r}: expected YYYY-MM-DDTHH (UTC), e.g. 2026-11-26T13")
    year, month, day, hour = (int(g) for g in m.groups())
    try:
        when = _dt.datetime(year, month, day, hour, tzinfo=_dt.timezone.utc)
    except ValueError as exc:
        raise ValueError(f"bad hour {text!r}: {exc}") from None
    return int((when - _EPOCH).total_seconds()) // 3600


def _check_index(h) -> int:
    """``h`` as a Python int (numpy integers accepted), inside years 1..9999."""
    if isinstance(h, bool) or not hasattr(h, "__index__"):
        raise ValueError(f"bad hour index {h!r}: expected an int")
    h = h.__index__()
    if not _MIN_HOUR <= h <= _MAX_HOUR:
        raise ValueError(f"bad hour index {h}: outside years 1..9999")
    return h


def hour_start(h: int) -> _dt.datetime:
    """The UTC datetime at which hour index ``h`` starts.

    >>> hour_start(25).isoformat()
    '1970-01-02T01:00:00+00:00'
    """
    return _EPOCH + _dt.timedelta(hours=_check_index(h))


def hour_of_datetime(when: _dt.datetime) -> int:
    """Hour index of the hour containing the time-zone-aware datetime ``when``.

    >>> hour_of_datetime(_dt.datetime(1970, 1, 2, 1, 59, tzinfo=_dt.timezone.utc))
    25
    """
    if when.tzinfo is None:
        raise ValueError(f"datetime {when!r} has no time zone")
    return int((when - _EPOCH).total_seconds() // 3600)


def hour_str(h: int) -> str:
    """Spell hour index ``h`` as ``YYYY-MM-DDTHH`` (UTC).

    >>> hour_str(0)
    '1970-01-01T00'
    >>> hour_str(-1)
    '1969-12-31T23'
    """
    return hour_start(h).strftime(HOUR_FORMAT)


def partition_relpath(h: int) -> str:
    """Relative path of the partition of hour ``h``: ``dt=YYYY-MM-DD/hour=HH``.

    Always ``/``-separated (it is also used inside URIs).

    >>> partition_relpath(0)
    'dt=1970-01-01/hour=00'
    """
    s = hour_str(h)
    return f"dt={s[:10]}/hour={s[11:13]}"


def hour_of_relpath(relpath: str) -> int:
    """Inverse of :func:`partition_relpath` (a trailing ``/`` is allowed).

    >>> hour_of_relpath("dt=1970-01-02/hour=01/")
    25
    >>> hour_of_relpath("dt=1970-01-02/hour=1")
    Traceback (most recent call last):
    ...
    ValueError: bad partition path 'dt=1970-01-02/hour=1': expected dt=YYYY-MM-DD/hour=HH
    """
    m = _RELPATH_RE.fullmatch(relpath)
    if m is None:
        raise ValueError(f"bad partition path {relpath!r}: expected dt=YYYY-MM-DD/hour=HH")
    return hour_index(f"{m.group(1)}T{m.group(2)}")


def day_of(h: int) -> int:
    """Day index (whole days since 1970-01-01 UTC) of hour ``h``: ``h // 24``."""
    return _check_index(h) // 24


def hour_of_day(h: int) -> int:
    """Hour of the day (0..23, UTC) of hour ``h``: ``h % 24``."""
    return _check_index(h) % 24
