"""Seeding `wf_es` from configs/es.json when `wf up` starts.

A `stop` in the file is always written. A `go` is written only where the key does not exist, so a
stop an operator set (`wf es stop NAME`) survives a restart of `wf up`; lift it with `wf es go NAME`.
A malformed es.json stops everything, as in the seed: every existing key is set to `stop` (and a
missing key already means stop)."""

from __future__ import annotations

from pathlib import Path

import nats.js.errors
import structlog
from nats.js.kv import KeyValue

from .stops import GO, STOP, EsConfigError, load_es_config

log = structlog.get_logger()


async def seed_emergency_stops(kv: KeyValue, path: Path) -> dict[str, str]:
    """Returns what the bucket holds afterwards."""
    try:
        wanted = load_es_config(path)
    except EsConfigError as exc:
        log.error("es_config_invalid_everything_stopped", error=str(exc))
        for key in await _keys(kv):
            await kv.put(key, STOP.encode())
        return {key: STOP for key in await _keys(kv)}
    for name, status in wanted.items():
        if status == STOP:
            await kv.put(name, STOP.encode())
            continue
        try:
            await kv.create(name, GO.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            log.info("es_kept", workreq=name, reason="already set; es.json seeds only new names with go")
    return {key: ((await kv.get(key)).value or b"").decode() for key in await _keys(kv)}


async def _keys(kv: KeyValue) -> list[str]:
    try:
        return await kv.keys()
    except nats.js.errors.NoKeysError:
        return []
