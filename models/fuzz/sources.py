"""Where the generator's random choices come from: hypothesis' `draw` or `random.Random`."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Source(Protocol):
    """Where random choices come from (hypothesis' `draw`, or `random.Random`)."""

    def integer(self, lo: int, hi: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def flag(self, percent: int) -> bool: ...


class RandomSource:
    """A `Source` backed by `random.Random(seed)`."""

    def __init__(self, seed: int | str) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def flag(self, percent: int) -> bool:
        return self.rng.randrange(100) < percent


class HypothesisSource:
    """A `Source` over hypothesis' `draw`.

    Each choice is a wide integer taken modulo the number of options: hypothesis favours
    small and boundary integers, which would make the first options (and the smallest shapes)
    far more common than the rest. Shrinking still moves toward 0: the first option, `lo`,
    and False.
    """

    SPREAD = 2**16

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        from hypothesis import strategies as st

        self.draw, self.wide = draw, st.integers(0, self.SPREAD - 1)

    def _index(self, n: int) -> int:
        return int(self.draw(self.wide)) % n

    def integer(self, lo: int, hi: int) -> int:
        return lo + self._index(hi - lo + 1)

    def choice(self, options: Sequence[T]) -> T:
        return options[self._index(len(options))]

    def flag(self, percent: int) -> bool:
        return self._index(100) >= 100 - percent
