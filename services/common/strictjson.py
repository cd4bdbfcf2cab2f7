"""Strict JSON for outside input: a key twice in one object is an error (400), never "last wins".

msgspec, like most JSON decoders, keeps the last value of a repeated key, so
`{"name": "a", "name": "b"}` would be the WorkReq `b` to the services and possibly `a` to whoever
read the text (a reviewer, a log, another tool). Every request body is therefore checked after it
decoded:

- `find_duplicate_key(data)`: the exact check, json.loads with an `object_pairs_hook` (a Python call
  per object: about 0.75 of msgspec's decode on top of it for a 100,000-job WorkReq). Small bodies
  always take it; it costs microseconds there.
- `workreq_duplicate_key(data, req, req_json)`: the same answer for a large WorkReq, at about a
  tenth of its decode: a count that proves no key can repeat, falling back to the exact check when
  it proves nothing.

The count. A colon outside a JSON string separates a key from its value, so in the raw bytes
`raw.count(":") = K + C`: K the keys written, C the colons inside strings. msgspec encodes the
decoded WorkReq with every field (defaults included) and no escaped colon, so
`enc.count(":") = F + C'`: F every field and args key of the decoded WorkReq, C' the colons in its
strings. Without a backslash in the raw bytes no colon hides as `\\u003a`, so C >= C' (a repeated
key's dropped value only adds to C). The keys written, with no repeat, are F less the fields left
out, and only a field at its default value can have been left out: so if
`raw.count(":") + (fields at their default) - (those seen written) <= enc.count(":")`, K is at most
the number of distinct keys, and no key repeats. Machine-written WorkReqs that leave defaults out
pass it; one that spells out `"desc": ""` or `"rate_limit": 0` takes the exact check.
"""

from __future__ import annotations

import json
import re
from typing import Any

from schemas import WorkReq

EXACT_BELOW = 64 * 1024  # bytes: below this the exact check is cheaper than reasoning about it
_MAX_FAILURES_NULL = re.compile(rb'"max_failures"\s*:\s*null')


class DuplicateKey(ValueError):
    """A key appears twice in one JSON object."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r} in one object")
        self.key = key


def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An `object_pairs_hook` for the json module: the object, or DuplicateKey."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


class _Pairs(list):  # type: ignore[type-arg]
    """An object as its pairs, in order: to find where a repeated key is."""


def _path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key) else f"{parent}[{key!r}]"


def _locate(data: bytes | str) -> tuple[str, str]:
    """(where, key) of the first repeated key, depth first in document order."""
    stack: list[tuple[Any, str]] = [(json.loads(data, object_pairs_hook=_Pairs), "$")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, _Pairs):
            seen: set[str] = set()
            for key, _ in node:
                if key in seen:
                    return where, key
                seen.add(key)
            stack.extend((value, _path(where, key)) for key, value in reversed(node))
        elif isinstance(node, list):
            stack.extend((value, f"{where}[{i}]") for i, value in reversed(list(enumerate(node))))
    return "$", ""


def find_duplicate_key(data: bytes | str) -> str | None:
    """Where a key appears twice in one object, said plainly; None when every key is unique (or
    the text is not JSON at all: decode it first, the decoder's error says what is wrong)."""
    try:
        json.loads(data, object_pairs_hook=unique_pairs)
    except DuplicateKey as dup:
        try:
            where, key = _locate(data)
        except (ValueError, RecursionError):
            where, key = "$", dup.key
        return f"duplicate key {key!r} at `{where}`: a key may appear only once in an object"
    except (ValueError, RecursionError):
        return None
    return None


def default_fields(req: WorkReq) -> int:
    """How many fields of the WorkReq hold their default value (so may have been left out)."""
    count = (req.desc == "") + (req.max_failures is None)
    for block in req.blocks:
        count += (block.desc == "") + (block.rate_limit == 0)
        for job in block.jobs:
            count += (job.desc == "") + (not job.args)
    return count


def provably_unique(data: bytes, req: WorkReq, req_json: bytes) -> bool:
    """The count of the module's docstring: True only when no key of `data` can repeat."""
    if b"\\" in data:
        return False
    seen_written = 1 if req.max_failures is None and b"null" in data and _MAX_FAILURES_NULL.search(data) else 0
    return data.count(b":") + default_fields(req) - seen_written <= req_json.count(b":")


def workreq_duplicate_key(data: bytes, req: WorkReq, req_json: bytes, *, exact_below: int = EXACT_BELOW) -> str | None:
    """`find_duplicate_key` for a WorkReq `req` decoded from `data` (`req_json`: msgspec's encoding
    of it), cheap for a large one."""
    if len(data) >= exact_below and provably_unique(data, req, req_json):
        return None
    return find_duplicate_key(data)
