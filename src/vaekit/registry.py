"""Name -> component registries.

Config strings name registered components; an unknown name raises :class:`ConfigError` listing the valid
ones. New encoders, likelihoods or priors register themselves and work everywhere at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from vaekit.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A small mapping from names to components (classes or factories).

    Parameters
    ----------
    kind
        What the registry holds, used in error messages ("likelihood", "architecture", ...).
    key
        The config key that names its entries (``"model.likelihood"``), named in error messages; optional.
    """

    def __init__(self, kind: str, key: str = "") -> None:
        self.kind = kind
        self.key = key
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the component registered as ``name``.

        Raises
        ------
        ConfigError
            If ``name`` is not registered; the message lists the valid names.
        """
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items))
            where = f" ({self.key})" if self.key else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{where}; choose one of: {valid}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
