"""The seed's configuration format: a stream of JSON values (JSON lines, or pretty-printed objects).

A key twice in one object is an error, not "last wins" (`{"Policies": [...], "Policies": []}` would
otherwise quietly drop the first list)."""

from __future__ import annotations

import json
from typing import Any

from .strictjson import DuplicateKey, unique_pairs


def json_stream(text: str) -> list[Any]:
    """Every JSON value in `text`, separated by white space; ValueError saying where it breaks."""
    decoder = json.JSONDecoder(object_pairs_hook=unique_pairs)
    values: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return values
        try:
            value, pos = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, DuplicateKey) as exc:
            raise ValueError(f"not a stream of JSON objects: {exc}") from None
        values.append(value)
