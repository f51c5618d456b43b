"""One shape for the pluggable parts (lip-sync engines, TTS backends): a name maps to a
factory, and parts that live in modules with heavy imports (torch, a service's client) are
imported on first use, so a server only loads what it builds."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

Part = TypeVar("Part")


class Registry(Generic[Part]):
    """Factories by name; ``lazy`` names the module whose import registers a part."""

    def __init__(self, kind: str, lazy: dict[str, str]) -> None:
        self.kind = kind
        """What the parts are called in errors ("engine", "TTS")."""
        self._factories: dict[str, Callable[..., Part]] = {}
        self._lazy = dict(lazy)

    def register(self, name: str, factory: Callable[..., Part]) -> None:
        """Make ``factory(**options)`` the way to build part ``name``."""
        self._factories[name] = factory

    def names(self) -> list[str]:
        """Every known name, whether or not that part can run here."""
        return sorted(set(self._factories) | set(self._lazy))

    def create(self, name: str, **options: object) -> Part:
        """Build part ``name``; ValueError naming the known ones for an unknown name (a part
        that cannot run here raises its own error)."""
        if name not in self._factories and name in self._lazy:
            importlib.import_module(self._lazy[name])
        factory = self._factories.get(name)
        if factory is None:
            known = ", ".join(self.names())
            raise ValueError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return factory(**options)
