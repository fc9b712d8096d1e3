"""What a query's answer must be, and how an answer read as text is compared with it.

Pure logic (no database): an expectation is written as text in a scenario (`>= 120000`,
`between 10 and 20`, `= paid`, an exact value), parsed once at validation, and compared with the
value the engine's client printed. Values are compared as numbers when both sides are numbers,
as times when both are times, and as text otherwise, so `>= 9` never loses to `10` by
comparing characters.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_OPERATOR = re.compile(r"^\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*$", re.DOTALL)
_BETWEEN = re.compile(r"^\s*between\s+(.+?)\s+and\s+(.+?)\s*$", re.IGNORECASE | re.DOTALL)
FORMS = "'>= 120000' (= != < <= > >=), 'between A and B', or an exact value"


@dataclass(frozen=True)
class Expectation:
    """A comparison of one answer with one value (two for `between`)."""

    operator: str  # one of OPERATORS, or "between"
    values: tuple[str, ...]
    written: str

    def holds(self, observed: str | None) -> bool:
        """Whether the observed answer (None: SQL NULL) satisfies the expectation."""
        if observed is None:  # NULL is what `= NULL` asks for, and differs from any value
            return self.operator == ("=" if self.values[0].upper() == "NULL" else "!=")
        if self.operator == "between":
            low, high = self.values
            return compare(observed, low, operator.ge) and compare(observed, high, operator.le)
        if self.values[0].upper() == "NULL":
            return self.operator == "!="
        return compare(observed, self.values[0], OPERATORS[self.operator])

    @property
    def proves_nothing(self) -> bool:
        """True when every count satisfies it (`>= 0`): it proves no data came back."""
        number = to_number(self.values[0]) if self.operator in (">=", ">") else None
        return number is not None and (number < 0 or (number == 0 and self.operator == ">="))


def parse_expectation(written: str | int | float) -> Expectation:
    """An expectation as written in a scenario; ValueError naming the accepted forms."""
    text = str(written).strip()
    if not text:
        raise ValueError(f"an empty expectation; write {FORMS}")
    between = _BETWEEN.match(text)
    if between:
        low, high = between[1], between[2]
        numbers = (to_number(low), to_number(high))
        if None not in numbers and numbers[0] > numbers[1]:  # type: ignore[operator]
            raise ValueError(f"{text!r}: the low bound is above the high one")
        return Expectation("between", (_unquoted(low), _unquoted(high)), text)
    match = _OPERATOR.match(text)
    if match:
        if not match[2]:
            raise ValueError(f"{text!r} has no value after {match[1]}; write {FORMS}")
        return Expectation(match[1], (_unquoted(match[2]),), text)
    return Expectation("=", (_unquoted(text),), text)


def compare(observed: str, expected: str, relation: Callable[[Any, Any], bool]) -> bool:
    """Compare as numbers, else as times, else as text."""
    numbers = to_number(observed), to_number(expected)
    if numbers[0] is not None and numbers[1] is not None:
        return relation(numbers[0], numbers[1])
    times = to_time(observed), to_time(expected)
    if times[0] is not None and times[1] is not None:
        return relation(times[0], times[1])
    return relation(observed, expected)


def to_number(text: str) -> Decimal | None:
    try:
        number = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def to_time(text: str) -> datetime | None:
    """An answer as an aware time: ISO 8601 with or without a zone (without one: UTC, as
    databases print `timestamp without time zone`), a date, or PostgreSQL's `+00` zone form."""
    value = text.strip()
    if re.search(r"[+-]\d\d$", value):  # PostgreSQL prints +00 / -05 for timestamptz
        value += ":00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            return None
        parsed = datetime(day.year, day.month, day.day)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _unquoted(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
