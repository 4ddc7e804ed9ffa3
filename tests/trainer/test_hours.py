import datetime as dt

import pytest
from hypothesis import given, strategies as st

from trainer.hours import day_of, hour_index, hour_of_day, hour_of_relpath, hour_str, partition_relpath


def test_known_values():
    assert hour_index("1970-01-01T00") == 0
    assert hour_index("2026-11-26T13") == 498805
    assert hour_str(498805) == "2026-11-26T13"
    assert partition_relpath(498805) == "dt=2026-11-26/hour=13"
    assert day_of(498805) == 498805 // 24 and hour_of_day(498805) == 13


def test_leap_day_and_day_boundary():
    assert hour_str(hour_index("2028-02-28T23") + 1) == "2028-02-29T00"
    assert hour_of_day(hour_index("2026-11-27T00")) == 0


@given(st.integers(min_value=-500_000, max_value=2_000_000))
def test_roundtrip(h):
    assert hour_index(hour_str(h)) == h
    assert hour_of_relpath(partition_relpath(h)) == h
    when = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=h)
    assert hour_str(h) == when.strftime("%Y-%m-%dT%H")


@pytest.mark.parametrize("bad", ["2026-11-26", "2026-11-26T13:00", "2026-13-01T00", "2026-02-30T01",
                                 "2026-11-26T24", "26-11-26T13", "", "2026-11-26t13"])
def test_bad_spelling_is_named(bad):
    with pytest.raises(ValueError) as err:
        hour_index(bad)
    assert repr(bad) in str(err.value)


def test_bad_index():
    with pytest.raises(ValueError, match="10000000000"):
        hour_str(10_000_000_000)
    with pytest.raises(ValueError, match="'12'"):
        hour_str("12")
    with pytest.raises(ValueError, match="hour=1'"):
        hour_of_relpath("dt=2026-11-26/hour=1")
