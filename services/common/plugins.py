"""A registry of named things (jobs, policies): the built-ins plus installed packages' entry points.

`Registry[T]` maps a name to the object registered under it. It is built from an explicit list at
start-up (nothing registers itself on import), then `add_plugins` calls each entry point of a group
(`wf.jobs`, `wf.policies`) and registers what it returns. A name registered twice, a plugin that
fails to load or whose name is taken, is a clear error naming it: the service then does not start."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any, Generic, Protocol, TypeVar


class Named(Protocol):
    """What a registry holds: anything with a `name` (a job, a policy)."""

    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Registry(Generic[T]):
    """Name -> object, for one `kind` of thing ("job", "policy": the word its errors use)."""

    kind = "item"

    def __init__(self, items: Iterable[T] = ()) -> None:
        self._items: dict[str, T] = {}
        for item in items:
            self.add(item)

    def add(self, item: T) -> None:
        """Register `item` under its name; ValueError if the name is taken."""
        if item.name in self._items:
            raise ValueError(f"{self.kind} {item.name!r} is registered twice")
        self._items[item.name] = item

    def get(self, name: str) -> T | None:
        return self._items.get(name)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def add_plugins(self, group: str, *factory_args: Any) -> None:
        """Call each entry point of `group` (in name order) with `factory_args` and register what it
        returns. A plugin that fails to load, or whose name is already registered, is a clear error
        naming its entry point."""
        for entry_point in sorted(entry_points(group=group), key=lambda ep: ep.name):
            try:
                item = entry_point.load()(*factory_args)
            except Exception as exc:  # a plugin's import or factory failed: say which, do not crash
                raise ValueError(
                    f"{self.kind} entry point {entry_point.name!r} ({entry_point.value}) failed to load: {exc!r}"
                ) from exc
            if item.name in self._items:
                raise ValueError(
                    f"{self.kind} {item.name!r} from entry point {entry_point.name!r} ({entry_point.value}) is already registered"
                )
            self.add(item)
