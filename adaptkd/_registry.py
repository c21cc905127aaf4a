"""One name → class registry, shared by methods, balancers and composable loss terms."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """``kind`` names the things registered (used in messages: "unknown method 'x'; closest: ...")."""

    def __init__(self, kind: str, *, set_name: bool = False) -> None:
        self.kind = kind
        self.set_name = set_name  # also store the registered name on the class as ``cls.name``
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator. Registering another class under a taken name raises ``ValueError``."""

        def deco(cls: T) -> T:
            if name in self._items and self._items[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if self.set_name:
                cls.name = name
            self._items[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def closest(self, name: object, n: int = 3) -> list[str]:
        return difflib.get_close_matches(str(name), list(self._items), n=n)

    def get(self, name: str) -> T:
        """The class registered as ``name``; ``KeyError`` naming the closest names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            close = self.closest(name)
            raise KeyError(f"unknown {self.kind} {name!r}" + (f"; closest: {', '.join(close)}" if close else "")) from None
