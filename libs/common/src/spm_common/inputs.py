"""What a request's values may be, once for every service: integers within the column they are compared with,
days and times within a range Python, asyncpg and Postgres all hold, with a real UTC offset.

Declared on a parameter (`after: Annotated[DbBigInt, Query(ge=0)]`), a value outside its bounds is a 422
naming the parameter, like any other invalid value, rather than an error from the database driver (a 500).
Text needs no type here: `spm_common.http` refuses NUL and lone surrogates in every request as it arrives.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field, PlainValidator, TypeAdapter, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

# Postgres's integer types; asyncpg raises (an OverflowError inside a DataError) on a value past them.
SMALLINT_MIN, SMALLINT_MAX = -(2**15), 2**15 - 1
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1

DbSmallInt = Annotated[int, Field(ge=SMALLINT_MIN, le=SMALLINT_MAX)]
DbInt = Annotated[int, Field(ge=INT_MIN, le=INT_MAX)]
DbBigInt = Annotated[int, Field(ge=BIGINT_MIN, le=BIGINT_MAX)]

# Nothing this system records is older than the Unix epoch. The last day leaves room for "the end of that day"
# and for a UTC offset: asyncpg converts a time to UTC before sending it, and past year 9999 Python cannot.
EARLIEST_DAY = date(1970, 1, 1)
LATEST_DAY = date(9999, 12, 30)
EARLIEST = datetime.combine(EARLIEST_DAY, datetime.min.time(), UTC)
LATEST = datetime.combine(LATEST_DAY, datetime.max.time(), UTC)
# The offsets clocks use run from -12:00 to +14:00; anything past ±14:00 is not a time anywhere.
MAX_OFFSET = timedelta(hours=14)


def _sane_day(value: date) -> date:
    if not EARLIEST_DAY <= value <= LATEST_DAY:
        raise PydanticCustomError("date_range", "a day from {earliest} to {latest}", _bounds())
    return value


def _sane_moment(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is not None and abs(offset) > MAX_OFFSET:
        raise PydanticCustomError("datetime_offset", "the UTC offset must be within -14:00 and +14:00")
    moment = value.replace(tzinfo=UTC) if offset is None else value  # a time without a zone is UTC
    if not EARLIEST <= moment <= LATEST:
        raise PydanticCustomError("datetime_range", "a time from {earliest} to {latest}", _bounds())
    return moment


def _bounds() -> dict[str, str]:
    return {"earliest": EARLIEST_DAY.isoformat(), "latest": LATEST_DAY.isoformat()}


# A day, from EARLIEST_DAY to LATEST_DAY.
BoundedDate = Annotated[date, AfterValidator(_sane_day)]
# A time with its UTC offset (none means UTC), from EARLIEST to LATEST; handed on aware, its offset kept.
BoundedDateTime = Annotated[datetime, AfterValidator(_sane_moment)]
# The same, for data that must say its offset (an event's times).
BoundedAwareDateTime = Annotated[AwareDatetime, AfterValidator(_sane_moment)]


_MOMENT = TypeAdapter(datetime)
_PLAIN_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _day_or_moment(value: object) -> date | datetime:
    # One type rather than a union of the two: "2026-01-05" must be the whole day (a union tries a time first,
    # and takes it as its midnight), and a bad value gets one error rather than one for each member.
    try:
        if isinstance(value, str) and _PLAIN_DAY.fullmatch(value):
            return _sane_day(date.fromisoformat(value))
        moment = _MOMENT.validate_python(value)
    except (ValueError, ValidationError) as error:
        if isinstance(error, PydanticCustomError):
            raise  # a real day, out of bounds
        raise PydanticCustomError("day_or_time", "a day (YYYY-MM-DD) or a time (ISO 8601)") from None
    return _sane_moment(moment)


# A whole day (YYYY-MM-DD) or a time, each bounded as above: a filter's `from` or `to`.
DayOrTime = Annotated[
    date | datetime,
    PlainValidator(_day_or_moment),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]}),
]
