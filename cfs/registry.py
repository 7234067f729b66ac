"""Named things that plugins register: strategies, scenarios, backbones.

A name is unique across all plugins; a second registration is an error naming both plugins,
so a third-party plugin cannot silently shadow a first-party method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Iterator, TypeVar

from cfs.errors import CfsError, unknown

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object, who registered it and a one-line description."""

    name: str
    obj: T
    plugin: str
    summary: str


def _first_line(obj: Any) -> str:
    doc = getattr(obj, "summary", None) or (obj.__doc__ or "")
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry(Generic[T]):
    """A name -> object map filled by a registration hook."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self.current_plugin = "?"  # set by the plugin manager while a plugin registers

    def add(self, obj: T, name: str | None = None, summary: str | None = None) -> T:
        """Register ``obj`` under ``name`` (default: ``obj.name``); returns ``obj`` so it can
        be used as a class decorator."""
        name = name or getattr(obj, "name", None)
        if not name:
            raise CfsError(f"a {self.kind} registered by plugin {self.current_plugin!r} has no name")
        if name in self._entries:
            other = self._entries[name].plugin
            raise CfsError(
                f"{self.kind} {name!r} is registered by both plugin {other!r} and plugin "
                f"{self.current_plugin!r}; disable one with -p no:NAME"
            )
        self._entries[name] = Entry(name, obj, self.current_plugin, summary or _first_line(obj))
        return obj

    def get(self, name: str) -> T:
        """The object called ``name``; an unknown name raises a CfsError with suggestions."""
        try:
            return self._entries[name].obj
        except KeyError:
            raise unknown(self.kind, name, self._entries) from None

    def entry(self, name: str) -> Entry[T]:
        self.get(name)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self]
