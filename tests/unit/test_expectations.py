"""Expectations as written in a scenario, and how an answer read as text is compared with them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from runners.expectations import Expectation, parse_expectation, to_number, to_time


@pytest.mark.parametrize(
    ("written", "operator", "values"),
    [
        (">= 120000", ">=", ("120000",)),
        ("=paid", "=", ("paid",)),
        ("!= 0", "!=", ("0",)),
        ("< 5", "<", ("5",)),
        ("<= 5", "<=", ("5",)),
        ("> 5", ">", ("5",)),
        ("between 10 and 20", "between", ("10", "20")),
        ("BETWEEN 'a' AND 'm'", "between", ("a", "m")),
        ("paid", "=", ("paid",)),
        (120000, "=", ("120000",)),
        ("= 'two words'", "=", ("two words",)),
        ('"> 5"', "=", ("> 5",)),
    ],
)
def test_each_written_form_parses_to_its_operator_and_unquoted_values(
    written: str | int, operator: str, values: tuple[str, ...]
) -> None:
    expectation = parse_expectation(written)
    assert (expectation.operator, expectation.values) == (operator, values)
    assert expectation.written == str(written).strip()


def test_an_empty_expectation_is_refused_naming_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"an empty expectation.*between A and B"):
        parse_expectation("   ")


def test_an_operator_without_a_value_is_refused() -> None:
    with pytest.raises(ValueError, match="has no value after >="):
        parse_expectation(">= ")


def test_a_between_whose_low_bound_is_above_the_high_one_is_refused() -> None:
    with pytest.raises(ValueError, match="the low bound is above the high one"):
        parse_expectation("between 20 and 10")


def test_numbers_compare_as_numbers_so_nine_is_below_ten() -> None:
    assert parse_expectation(">= 9").holds("10")
    assert not parse_expectation("> 10").holds("9")
    assert parse_expectation("= 1000").holds("1000.00")


def test_between_includes_both_bounds_and_nothing_outside() -> None:
    expectation = parse_expectation("between 10 and 20")
    assert [expectation.holds(value) for value in ("9", "10", "20", "21")] == [
        False,
        True,
        True,
        False,
    ]


def test_times_compare_as_times_across_zones_and_postgres_short_offsets() -> None:
    assert parse_expectation("= 2024-06-01 12:00:00+00:00").holds("2024-06-01 14:00:00+02")
    assert parse_expectation("> 2024-06-01 11:00").holds("2024-06-01 07:00:00-05")


def test_a_time_without_a_zone_is_read_as_utc() -> None:
    assert parse_expectation("= 2024-06-01T12:00:00Z").holds("2024-06-01 12:00:00")


def test_text_compares_as_text_when_either_side_is_not_a_number_or_time() -> None:
    assert parse_expectation("paid").holds("paid")
    assert not parse_expectation("paid").holds("Paid")
    assert parse_expectation("< b").holds("abc")


def test_null_answers_only_satisfy_equals_null_and_not_equal_to_a_value() -> None:
    assert parse_expectation("= NULL").holds(None)
    assert parse_expectation("null").holds(None)
    assert parse_expectation("!= 0").holds(None)
    assert not parse_expectation("= 0").holds(None)
    assert not parse_expectation(">= 0").holds(None)
    assert not parse_expectation("between 1 and 2").holds(None)
    assert not parse_expectation("!= NULL").holds(None)


def test_not_equal_null_holds_for_any_value_and_equal_null_for_none() -> None:
    assert parse_expectation("!= NULL").holds("0")
    assert parse_expectation("!= NULL").holds("")
    assert not parse_expectation("= NULL").holds("0")


@pytest.mark.parametrize(
    ("written", "proves_nothing"),
    [
        (">= 0", True),
        ("> -1", True),
        (">= -5", True),
        (">= 1", False),
        ("> 0", False),
        ("= 0", False),
        ("!= 0", False),
        ("between 0 and 10", False),
        (">= paid", False),
    ],
)
def test_only_expectations_every_count_satisfies_prove_nothing(
    written: str, proves_nothing: bool
) -> None:
    assert parse_expectation(written).proves_nothing is proves_nothing


def test_an_expectation_is_a_frozen_value() -> None:
    expectation = parse_expectation("= 1")
    assert expectation == Expectation("=", ("1",), "= 1")
    with pytest.raises(AttributeError):
        expectation.operator = "!="  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("42", Decimal(42)),
        (" -1.5 ", Decimal("-1.5")),
        ("1e3", Decimal(1000)),
        ("NaN", None),
        ("Infinity", None),
        ("paid", None),
        ("", None),
    ],
)
def test_to_number_reads_finite_numbers_only(text: str, number: Decimal | None) -> None:
    assert to_number(text) == number


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2024-06-01", datetime(2024, 6, 1, tzinfo=UTC)),
        ("2024-06-01 12:30:00", datetime(2024, 6, 1, 12, 30, tzinfo=UTC)),
        ("2024-06-01 12:30:00+00", datetime(2024, 6, 1, 12, 30, tzinfo=UTC)),
        ("2024-06-01 12:30:00.25-05", datetime(2024, 6, 1, 17, 30, 0, 250000, tzinfo=UTC)),
        ("2024-06-01T12:30:00+02:00", datetime(2024, 6, 1, 10, 30, tzinfo=UTC)),
    ],
)
def test_to_time_reads_iso_times_and_dates_as_aware_times(text: str, moment: datetime) -> None:
    parsed = to_time(text)
    assert parsed == moment
    assert parsed is not None and parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["paid", "12:30", "120000", "", "2024-13-01"])
def test_to_time_is_none_for_what_is_not_a_time(text: str) -> None:
    assert to_time(text) is None
