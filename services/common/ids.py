"""Workflow ids: ULIDs (26 Crockford base32 characters), unique and ordered by creation time.

They are valid NATS subject tokens and KV keys, and sort lexically in creation order."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def new_id(now_ms: int | None = None) -> str:
    """A new ULID; ids made in the same millisecond by one process still increase."""
    global _last_ms, _last_rand
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = (_last_rand + 1) & ((1 << 80) - 1)
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_rand = ms, rand
    value = (ms << 80) | rand
    return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))


def id_time_s(wf_id: str) -> float:
    """The creation time (unix seconds) encoded in an id made by `new_id`."""
    value = 0
    for char in wf_id:
        value = (value << 5) | _ALPHABET.index(char)
    return (value >> 80) / 1000.0


def is_valid_id(text: str) -> bool:
    return len(text) == 26 and all(c in _ALPHABET for c in text)
