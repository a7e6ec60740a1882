"""The numbers a setting takes, and the one way a number outside them is said.

Every numeric setting a user gives (the run's, a sampler's, the captioner's, an executor's, a
sub-command's option) is checked against a :class:`Range` by its owner, and refused in one
sentence: ``engine.n_threads=0 is out of range: engine.n_threads must be >= 1 and <= 512, or
null for one per core``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError, UserError


@dataclass(frozen=True)
class Range:
    """The numbers a setting takes: above ``low`` (``strict``) or from it, up to ``high``,
    always finite; what null means, where the schema takes it; and a fix other than another
    number, where there is one (``for every frame: sampler=all``)."""

    low: float
    strict: bool = False
    high: float | None = None
    null: str = ""
    hint: str = ""

    def holds(self, value: float) -> bool:
        """Whether ``value`` is in the range (NaN and infinities never are)."""
        if not math.isfinite(value):
            return False
        above = value > self.low if self.strict else value >= self.low
        return above and (self.high is None or value <= self.high)

    def words(self) -> str:
        """The range in words: ``>= 1 and <= 512, or null for one per core``."""
        low = f"{'>' if self.strict else '>='} {number(self.low)}"
        words = low if self.high is None else f"{low} and <= {number(self.high)}"
        return f"{words}, or null {self.null}" if self.null else words

    def refusal(self, key: str, value: float) -> str:
        """The line that refuses ``key=value``."""
        line = f"{key}={number(value)} is out of range: {key} must be {self.words()}"
        return f"{line} ({self.hint})" if self.hint else line

    def check(self, key: str, value: float | None, error: type[UserError] = ConfigError) -> None:
        """Refuse ``key=value`` out of the range; ``None`` (null, where the schema takes it) is taken.

        Raises:
            UserError: Of kind ``error``, with :meth:`refusal`'s line.
        """
        if value is not None and not self.holds(value):
            raise error(self.refusal(key, value))


def number(value: float) -> str:
    """A number as written: a whole one in all its digits (a limit of 4294967294, not 4.29497e+09)."""
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() else f"{value:g}"


def check_ranges(
    ranges: Mapping[str, Range], value_of: Callable[[str], Any], error: type[UserError] = ConfigError
) -> None:
    """Refuse the first setting of ``ranges`` whose value (``value_of(key)``) is out of its
    range (:meth:`Range.check`).

    Raises:
        UserError: Of kind ``error``, with :meth:`Range.refusal`'s line.
    """
    for key, allowed in ranges.items():
        allowed.check(key, value_of(key), error)
