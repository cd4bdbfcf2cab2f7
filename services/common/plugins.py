"""Jobs and policies from installed packages: entry points, loaded at start-up next to the built-ins."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Protocol


class Registry(Protocol):
    def get(self, name: str) -> Any: ...

    def add(self, item: Any) -> None: ...


def add_plugins(registry: Registry, group: str, kind: str, *factory_args: Any) -> None:
    """Call each entry point of `group` with `factory_args` and register what it returns. A plugin
    that fails to load, or whose name is already registered, is a clear error naming it."""
    for entry_point in sorted(entry_points(group=group), key=lambda ep: ep.name):
        try:
            item = entry_point.load()(*factory_args)
        except Exception as exc:  # a plugin's import or factory failed: say which, do not crash
            raise ValueError(f"{kind} entry point {entry_point.name!r} ({entry_point.value}) failed to load: {exc!r}") from exc
        if registry.get(item.name) is not None:
            raise ValueError(f"{kind} {item.name!r} from entry point {entry_point.name!r} ({entry_point.value}) is already registered")
        registry.add(item)
