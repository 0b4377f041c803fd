"""The shared bounds of request values: integers a column holds, days and times with a real UTC offset."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from spm_common.inputs import BoundedDateTime, DayOrTime, DbBigInt, DbInt, DbSmallInt


@pytest.mark.parametrize(
    ("kind", "bits"), [(DbSmallInt, 16), (DbInt, 32), (DbBigInt, 64)], ids=["smallint", "int", "bigint"]
)
def test_integers_hold_exactly_what_their_column_holds(kind: Any, bits: int) -> None:
    adapter = TypeAdapter(kind)
    assert adapter.validate_python(2 ** (bits - 1) - 1) == 2 ** (bits - 1) - 1
    assert adapter.validate_python(-(2 ** (bits - 1))) == -(2 ** (bits - 1))
    for past in (2 ** (bits - 1), -(2 ** (bits - 1)) - 1, 2**80):
        with pytest.raises(ValidationError):
            adapter.validate_python(past)


def test_a_plain_day_is_a_day_and_anything_else_a_time() -> None:
    adapter = TypeAdapter(DayOrTime)
    assert adapter.validate_python("2026-01-05") == date(2026, 1, 5)
    assert adapter.validate_python("2026-01-05T00:00:00Z") == datetime(2026, 1, 5, tzinfo=UTC)
    assert adapter.validate_python("2026-01-05T10:00:00") == datetime(2026, 1, 5, 10, tzinfo=UTC)  # no zone: UTC
    kept = adapter.validate_python("2026-01-05T10:00:00+07:00")
    assert isinstance(kept, datetime)
    assert kept.utcoffset() == timedelta(hours=7)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("0041-08-16T11:54:49.55571-18:42", "datetime_offset"),  # no clock has that offset
        ("2026-01-05T10:00:00+14:01", "datetime_offset"),
        ("0001-01-01T00:00:00+14:00", "datetime_range"),  # before year 1 in UTC
        ("1969-12-31T23:59:59Z", "datetime_range"),
        ("9999-12-31T00:00:00Z", "datetime_range"),
        ("1969-12-31", "date_range"),
        ("9999-12-31", "date_range"),
        ("2026-02-30", "day_or_time"),
        ("yesterday", "day_or_time"),
    ],
)
def test_days_and_times_out_of_range_or_with_no_real_offset_are_refused(value: str, error: str) -> None:
    with pytest.raises(ValidationError) as refused:
        TypeAdapter(DayOrTime).validate_python(value)
    assert [e["type"] for e in refused.value.errors()] == [error]


def test_the_edges_of_the_range_are_taken_whatever_their_offset() -> None:
    adapter = TypeAdapter(BoundedDateTime)
    for edge in (
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 30, 23, 59, tzinfo=timezone(timedelta(hours=14))),
        datetime(1970, 1, 1, 13, tzinfo=timezone(timedelta(hours=-12))),
    ):
        assert adapter.validate_python(edge) == edge
