"""A tiny name → object registry used for passes, observers, runners and modes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from bridge.errors import ConfigError

T = TypeVar("T")


class Registry[T]:
    """Maps names to objects, in registration order. Registering a name twice is an error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under `name` and returns it unchanged."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the entry called `name`, or raise ConfigError listing the known names."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self._items)
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {known}") from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
