"""The rules a config value is checked against: what each allows, how it says so, and check_values, which
applies a set of them. A number given as a string (`"aug.rotation='30'"` on the command line) fits a Number
rule and is read as the number; a string that is not a number does not fit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig


@dataclass(frozen=True)
class Number:
    """A number (an integer if `integer`) in [low, high]; `open_low`/`open_high` exclude the ends."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    nullable: bool = False
    open_low: bool = False
    open_high: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            text = f"{kind} in {'(' if self.open_low else '['}{_n(self.low)}, {_n(self.high)}{')' if self.open_high else ']'}"
        elif self.low is not None:
            text = f"{kind} {'>' if self.open_low else '>='} {_n(self.low)}"
        else:
            text = kind
        return f"{text} or null" if self.nullable else text

    def check(self, value: Any) -> tuple[bool, Any]:
        """(fits, the value converted from a numeric string where it was one)."""
        if value is None:
            return self.nullable, value
        if isinstance(value, str):
            value = _parse_number(value, self.integer)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        if self.integer and not isinstance(value, int):
            return False, value
        if not math.isfinite(value):
            return False, value
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False, value
        if self.high is not None and (value > self.high or (self.open_high and value == self.high)):
            return False, value
        return True, value


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]
    nullable: bool = False

    def describe(self) -> str:
        text = f"one of {', '.join(self.options)}"
        return f"{text} or null" if self.nullable else text

    def check(self, value: Any) -> tuple[bool, Any]:
        return value in self.options or (self.nullable and value is None), value


@dataclass(frozen=True)
class Flag:
    def describe(self) -> str:
        return "true or false"

    def check(self, value: Any) -> tuple[bool, Any]:
        return isinstance(value, bool), value


@dataclass(frozen=True)
class Text:
    nullable: bool = False

    def describe(self) -> str:
        return "a non-empty string or null" if self.nullable else "a non-empty string"

    def check(self, value: Any) -> tuple[bool, Any]:
        if value is None:
            return self.nullable, value
        return isinstance(value, str) and bool(value), value


@dataclass(frozen=True)
class Duration:
    """Lightning's max_time: "DD:HH:MM:SS", or a mapping of days/hours/minutes/seconds."""

    def describe(self) -> str:
        return "null, DD:HH:MM:SS or a mapping of days/hours/minutes/seconds"

    def check(self, value: Any) -> tuple[bool, Any]:
        if value is None or (isinstance(value, str) and re.fullmatch(r"\d+:\d\d:\d\d:\d\d", value)):
            return True, value
        if isinstance(value, DictConfig):
            units = {"days", "hours", "minutes", "seconds"}
            return set(value) <= units and all(Number(0).check(v)[0] for v in value.values()), value
        return False, value


@dataclass(frozen=True)
class Batches:
    """Lightning's limit_*_batches: a whole number of batches, or a fraction of them."""

    def describe(self) -> str:
        return "an integer >= 0 (batches) or a number in [0, 1] (a fraction of the batches)"

    def check(self, value: Any) -> tuple[bool, Any]:
        whole = Number(0, integer=True).check(value)
        return whole if whole[0] else Number(0, 1).check(value)


@dataclass(frozen=True)
class ListOf:
    """A list, possibly empty, of values that each fit `item`."""

    item: Any

    def describe(self) -> str:
        return f"a list of values, each {self.item.describe()}"

    def check(self, value: Any) -> tuple[bool, Any]:
        if not isinstance(value, (list, tuple, ListConfig)):
            return False, value
        checked = [self.item.check(v) for v in value]
        return all(fits for fits, _ in checked), [v for _, v in checked]


def _n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _parse_number(text: str, integer: bool) -> Any:
    try:
        return int(text) if integer else float(text)
    except ValueError:
        return text


def check_values(
    rules: dict[str, Any], values: dict[str, Any], prefix: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """Each of `values` that `rules` has a rule for, checked: the values (a numeric string read as its number)
    and a line per wrong one, naming its key (after `prefix`), what is allowed and what was given."""
    converted, problems = {}, []
    for key, value in values.items():
        if key not in rules:
            continue
        fits, converted[key] = rules[key].check(value)
        if not fits:
            problems.append(f"{prefix}{key}: expected {rules[key].describe()}, got {value!r}")
    return converted, problems
