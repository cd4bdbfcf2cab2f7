"""Workflow ids: ULIDs (26 Crockford base32 characters), unique and ordered by creation time.

They are valid NATS subject tokens and KV keys, and sort lexically in creation order."""

from __future__ import annotations

import base64
import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# base64's base32 alphabet -> Crockford's: encoding in C, not one Python step per character
_FROM_RFC4648 = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
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
    """128 bits as 26 Crockford base32 characters, the first holding the top 3 bits. Shifted into
    160 bits (20 bytes: 32 characters of 5 bits), the first 26 characters are exactly those."""
    return base64.b32encode((value << 30).to_bytes(20, "big"))[:26].translate(_FROM_RFC4648).decode()


def id_time_s(wf_id: str) -> float:
    """The creation time (unix seconds) encoded in an id made by `new_id`."""
    value = 0
    for char in wf_id:
        value = (value << 5) | _ALPHABET.index(char)
    return (value >> 80) / 1000.0


def is_valid_id(text: str) -> bool:
    return len(text) == 26 and all(c in _ALPHABET for c in text)
