"""Workflow ids: ULIDs (26 Crockford base32 characters), unique and ordered by creation time.

They are valid NATS subject tokens and KV keys, and sort lexically in creation order."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # every 10 bits as their two characters
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
    return encode((ms << 80) | rand)


def encode(value: int) -> str:
    """128 bits as 26 Crockford base32 characters, the first holding the top 3 bits: 13 look-ups of
    10 bits each (3.7 us per id against 6.7 for 26 of 5 bits; base64's base32, pure Python in
    3.11, was slower still)."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(120, -1, -10)])


def id_time_s(wf_id: str) -> float:
    """The creation time (unix seconds) encoded in an id made by `new_id`."""
    value = 0
    for char in wf_id:
        value = (value << 5) | _ALPHABET.index(char)
    return (value >> 80) / 1000.0


def is_valid_id(text: str) -> bool:
    return len(text) == 26 and all(c in _ALPHABET for c in text)
