"""Cron expressions, time zones and due-time arithmetic (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend.errors import InvalidInputError
from backend.schedules import (
    MAX_COUNTED_MISSES,
    _latest_due,
    next_run_time,
    upcoming_run_times,
    validate_catch_up,
    validate_cron,
    validate_schedule_name,
    validate_timezone,
)

NOW = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)


def test_valid_expressions_are_normalised() -> None:
    assert validate_cron("  0   2 * * * ") == "0 2 * * *"
    assert validate_cron("@Daily") == "@daily"
    assert validate_cron("*/15 8-18 * * mon-fri") == "*/15 8-18 * * mon-fri"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty"),
        ("0 2 * *", "has 4 fields; expected 5"),
        ("0 2 * * * *", "has 6 fields; expected 5"),
        ("61 * * * *", "invalid cron expression"),
        ("0 2 * * funday", "invalid cron expression"),
        ("@fortnightly", "unknown cron macro"),
        ("0 0 31 2 *", "never matches"),
    ],
)
def test_invalid_expressions_say_why(expression: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        validate_cron(expression, now=NOW)


def test_next_run_is_strictly_after_and_read_in_the_time_zone() -> None:
    assert next_run_time("0 2 * * *", after=NOW) == datetime(2026, 1, 16, 2, 0, tzinfo=UTC)
    assert next_run_time("30 10 * * *", after=NOW) == datetime(2026, 1, 16, 10, 30, tzinfo=UTC)
    # 02:00 in Paris is 01:00 UTC in winter and 00:00 UTC in summer.
    assert next_run_time("0 2 * * *", after=NOW, timezone="Europe/Paris") == datetime(2026, 1, 16, 1, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert next_run_time("0 2 * * *", after=summer, timezone="Europe/Paris") == datetime(2026, 7, 2, 0, 0, tzinfo=UTC)
    assert upcoming_run_times("@hourly", after=NOW, count=3) == [
        datetime(2026, 1, 15, hour, 0, tzinfo=UTC) for hour in (11, 12, 13)
    ]


def test_latest_due_counts_the_due_times_up_to_now() -> None:
    first = datetime(2026, 1, 12, 2, 0, tzinfo=UTC)
    assert _latest_due("0 2 * * *", first_due=first, now=NOW, timezone="UTC") == (
        datetime(2026, 1, 15, 2, 0, tzinfo=UTC),
        4,
    )
    assert _latest_due("0 2 * * *", first_due=first, now=first, timezone="UTC") == (first, 1)
    # A very long outage of an every-minute schedule: the count is capped, the latest due time exact.
    long_ago = NOW - timedelta(days=30)
    latest, count = _latest_due("* * * * *", first_due=long_ago, now=NOW, timezone="UTC")
    assert latest == NOW and count == MAX_COUNTED_MISSES


def test_names_zones_and_policies_are_checked() -> None:
    assert validate_schedule_name(" nightly-churn ") == "nightly-churn"
    with pytest.raises(InvalidInputError, match="schedule name"):
        validate_schedule_name("nightly churn")
    assert validate_timezone("Europe/Paris") == "Europe/Paris"
    with pytest.raises(InvalidInputError, match="unknown time zone"):
        validate_timezone("Mars/Olympus")
    with pytest.raises(InvalidInputError, match="once, skip"):
        validate_catch_up("twice")
