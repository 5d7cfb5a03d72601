"""A small generic registry: name -> object, with clear errors that list the valid names.

Each registration remembers where it came from: the plugin being loaded (`loading(source)`, set by
`trainlock.plugins`) or None for the package itself, so a saved artifact can name the plugin that defines a
lock and a miss can say to load it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

PLUGIN_HINT = "a name from a plugin needs --plugin PATH.py|MODULE (or TRAINLOCK_PLUGINS)"
_loading: list[str] = []  # the plugins being imported now, innermost last


@contextlib.contextmanager
def loading(source: str) -> Iterator[None]:
    """Registrations inside this block come from the plugin `source` (a path or a module name)."""
    _loading.append(source)
    try:
        yield
    finally:
        _loading.pop()


def _called_from_plugin() -> bool:
    """Whether the registration now under way comes from outside trainlock: walking out from here, a frame of
    another package comes before the top level of a trainlock module (a built-in module imported while a
    plugin loads registers as built-in)."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (module == "trainlock" or module.startswith("trainlock.")):
            return True
        if frame.f_code.co_name == "<module>":
            return False
        frame = frame.f_back
    return False


class UnknownNameError(KeyError):
    """Raised when a name is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to objects of one kind (locks, attacks, tasks, models, optimizers).

    Duplicate names are rejected; a miss raises `UnknownNameError` naming every valid entry.
    `load` (optional) imports the modules that register the rest of the entries; it runs once, the
    first time a name is missed or the names are listed, so a registry can be cheap to import.
    """

    def __init__(self, kind: str, load: Callable[[], None] | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origin: dict[str, str | None] = {}
        self._load = load

    def _ensure_loaded(self) -> None:
        if self._load is not None:
            load, self._load = self._load, None
            load()

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` above a class or function."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered (by {self.origin(name) or 'trainlock'})")
        self._items[name] = obj
        self._origin[name] = _loading[-1] if _loading and _called_from_plugin() else None

    def origin(self, name: str) -> str | None:
        """The plugin that registered `name` (a path or module name), None for a built-in entry."""
        self.get(name)
        return self._origin.get(name)

    def get(self, name: str) -> T:
        if name not in self._items:
            self._ensure_loaded()
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid} ({PLUGIN_HINT})") from None

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self._ensure_loaded()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._items)
