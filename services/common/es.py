"""Emergency stop: KV `wf_es`, WorkReq name -> `go` or `stop`; a missing key or any other value is stop.

Every service that must react follows the bucket with a KV watch (no polling), so a
`nats kv put wf_es NAME stop` reaches intake, executors and runners within milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import msgspec
import structlog
from nats.js.kv import KeyValue

from .bus import kv_updates
from .configfile import load_config
from .jsonstream import json_stream

log = structlog.get_logger()
GO = "go"
STOP = "stop"


class EsConfigError(ValueError):
    """configs/es.json cannot be used; `wf up` then stops everything, as the seed did."""


class _EsEntry(msgspec.Struct, forbid_unknown_fields=True):
    Name: str
    Status: str


def parse_es_config(text: str) -> dict[str, str]:
    """`{"Name": WorkReq name, "Status": "go"|"stop"}` objects -> {name: status}."""
    try:
        values = json_stream(text)
    except ValueError as exc:
        raise EsConfigError(str(exc)) from None
    states: dict[str, str] = {}
    for n, value in enumerate(values, start=1):
        try:
            entry = msgspec.convert(value, _EsEntry, strict=True)
        except msgspec.ValidationError as exc:
            raise EsConfigError(f"entry {n}: {exc}") from None
        if entry.Status not in (GO, STOP):
            raise EsConfigError(f"entry {n} ({entry.Name}): Status must be \"go\" or \"stop\", got {entry.Status!r}")
        if entry.Name in states:
            raise EsConfigError(f"entry {n}: {entry.Name!r} appears twice")
        states[entry.Name] = entry.Status
    return states


def load_es_config(path: Path) -> dict[str, str]:
    return load_config(path, parse_es_config, EsConfigError)


Listener = Callable[[str, bool], None]  # (WorkReq name, is it go now)


class EmergencyStops:
    """The live state of `wf_es` in this process."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self.ready = asyncio.Event()  # set once the current values are loaded
        self._listeners: list[Listener] = []

    def is_go(self, name: str) -> bool:
        return self._values.get(name) == GO

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def snapshot(self) -> dict[str, str]:
        return dict(self._values)

    def _set(self, name: str, value: str | None) -> None:
        was_go = self.is_go(name)
        if value is None:
            self._values.pop(name, None)
        else:
            self._values[name] = value
        now_go = self.is_go(name)
        if now_go != was_go:
            log.info("emergency_stop_changed", workreq=name, state=GO if now_go else STOP)
            for listener in self._listeners:
                listener(name, now_go)

    async def follow(self, kv: KeyValue, stop: asyncio.Event) -> None:
        async for entry in kv_updates(kv, stop):
            if entry is None:
                self.ready.set()
                continue
            deleted = entry.operation in ("DEL", "PURGE")
            self._set(entry.key, None if deleted or entry.value is None else entry.value.decode(errors="replace"))
