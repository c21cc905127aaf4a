"""One name → object registry, shared by methods, balancers, loss terms, models and datasets."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """``kind`` names the things registered (used in messages: "unknown method 'x' (closest: ...)").

    Entries are classes (methods, balancers, loss terms) or functions (model builders, dataset
    loaders), registered with the :meth:`register` decorator or :meth:`add`.
    """

    def __init__(self, kind: str, *, set_name: bool = False) -> None:
        self.kind = kind
        self.set_name = set_name  # also store the registered name on the class as ``cls.name``
        self._items: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name``; another object under a taken name raises ``ValueError``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        prev = self._items.get(name)
        if prev is not None and prev is not obj:
            where = f"{getattr(prev, '__module__', '?')}.{getattr(prev, '__qualname__', '?')}"
            raise ValueError(f"{self.kind} {name!r} is already registered (by {where}); pick another name")
        if self.set_name:
            obj.name = name  # type: ignore[attr-defined]
        self._items[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering the class or function it decorates as ``name``."""

        def deco(obj: T) -> T:
            return self.add(name, obj)

        return deco

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def closest(self, name: object, n: int = 3, cutoff: float = 0.6) -> list[str]:
        """Registered names closest to ``name`` (case-insensitive), best first."""
        by_lower = {k.lower(): k for k in self._items}
        return [by_lower[h] for h in difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=cutoff)]

    def hint(self, name: object) -> str:
        """`` (closest: a, b)`` or, when nothing is close, `` (known: every name)`` — for messages."""
        close = self.closest(name, cutoff=0.4)
        return f" (closest: {', '.join(close)})" if close else f" (known: {', '.join(self.names())})"

    def get(self, name: str) -> T:
        """The object registered as ``name``; ``KeyError`` naming the closest names otherwise."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise KeyError(f"unknown {self.kind} {name!r}{self.hint(name)}") from None

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def remove(self, name: str) -> None:
        """Forget ``name`` (no error when it is not registered); for tests that register temporarily."""
        self._items.pop(name, None)
