"""One generic registry, used for methods, datasets and protocols.

Mirrors timm's model registry: components register themselves with a
decorator at import time, and tests parametrize over ``registry.names()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown component name; ``str()`` is the plain message (KeyError quotes it)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _qualified_name(obj: object) -> str | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else None


class Registry(Generic[T]):
    """Name -> component, with a clear error for unknown names.

    Registering a name twice is an error, except for the same qualified object
    (module + qualname) registered again: re-running a notebook cell or reloading a
    module that defines a class re-creates it, and the new definition replaces the old.

    >>> pools = Registry("pool")
    >>> @pools.register("max")
    ... def pool_max(xs):
    ...     return max(xs)
    >>> pools.get("max")([1, 3, 2]), pools.names()
    (3, ['max'])
    >>> pools.get("mean")
    Traceback (most recent call last):
    ...
    mlmm.registry.UnknownNameError: unknown pool 'mean'; known: max
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._items:
                old = self._items[name]
                same = _qualified_name(old) is not None and _qualified_name(old) == _qualified_name(obj)
                if not same:
                    raise ValueError(f"{self.kind} {name!r} is registered twice ({_qualified_name(old)} and "
                                     f"{_qualified_name(obj)})")
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its component (for temporary registrations, e.g. in tests)."""
        obj = self.get(name)
        del self._items[name]
        return obj

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
