"""Token buckets: `configs/buckets.json`, and their state shared through KV `wf_buckets`.

A bucket holds up to `size` tokens and gains `refill` tokens every `every` (a duration such as
`30m`, `1s`, `1h30m`, `500ms`). A full bucket does not bank time: its refill clock restarts at the
first take, so after draining a full bucket the next token comes one interval later. State is
`{"tokens", "at"}` per bucket, updated with compare-and-set on the KV revision, and the refill is
computed from elapsed time (no ticker), so any number of processes share one bucket and a restart
forgets nothing. A bucket with no state yet starts full."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Annotated

import msgspec
import nats.js.errors
from msgspec import Meta
from nats.js.kv import KeyValue

from schemas import DECODE_ERRORS
from services.common.configfile import load_config

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class BucketConfigError(ValueError):
    """buckets.json cannot be used; the message says where and why."""


def parse_duration_s(text: str) -> float:
    """`30m` -> 1800.0; `1h30m`, `1s`, `250ms`; the whole text must parse and be above zero."""
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text or total <= 0:
        raise ValueError(f"{text!r} is not a duration like 30m, 1s, 1h30m or 500ms")
    return total


class BucketConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    size: Annotated[int, Meta(ge=1)]
    refill: Annotated[int, Meta(ge=1)]
    every: str
    jobs: list[str] = []

    @property
    def every_s(self) -> float:
        return parse_duration_s(self.every)


def parse_bucket_configs(text: str) -> dict[str, BucketConfig]:
    try:
        configs = msgspec.json.decode(text, type=dict[str, BucketConfig], strict=True)
    except DECODE_ERRORS as exc:
        raise BucketConfigError(str(exc)) from None
    for name, config in configs.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise BucketConfigError(f"bucket name {name!r}: use letters, digits, '-' and '_'")
        try:
            parse_duration_s(config.every)
        except ValueError as exc:
            raise BucketConfigError(f"bucket {name!r}: every: {exc}") from None
    return configs


def load_bucket_configs(path: Path) -> dict[str, BucketConfig]:
    return load_config(path, parse_bucket_configs, BucketConfigError)


class BucketState(msgspec.Struct):
    tokens: int
    at: float  # when the refill clock last advanced (unix seconds)


def refilled(state: BucketState, config: BucketConfig, now: float) -> BucketState:
    """The state after the refills due by `now`. Pure."""
    if state.tokens >= config.size:
        return BucketState(config.size, now)
    intervals = math.floor((now - state.at) / config.every_s)
    if intervals <= 0:
        return state
    tokens = min(config.size, state.tokens + intervals * config.refill)
    at = now if tokens >= config.size else state.at + intervals * config.every_s
    return BucketState(tokens, at)


def seconds_to_next_token(state: BucketState, config: BucketConfig, now: float) -> float:
    """At most one interval: `at` later than `now` (another host's clock running ahead) waits no longer."""
    return 0.0 if state.tokens >= 1 else min(config.every_s, max(0.0, state.at + config.every_s - now))


_state_decoder = msgspec.json.Decoder(BucketState)


class BucketStore:
    """Takes tokens from the shared state in KV `wf_buckets`."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def take(self, name: str, config: BucketConfig) -> float:
        """Take one token: 0.0 when taken, else the seconds until the next one is due."""
        while True:
            try:
                entry = await self.kv.get(name)
                revision = entry.revision or 0
                state = _state_decoder.decode(entry.value) if entry.value else None
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                revision, state = 0, None
            # read after the state: a clock read before it could precede the `at` another taker
            # wrote meanwhile, and the wait would come out longer than one interval
            now = time.time()
            state = state or BucketState(config.size, now)
            state = refilled(state, config, now)
            if state.tokens < 1:
                return max(seconds_to_next_token(state, config, now), 0.001)
            state.tokens -= 1
            try:
                if revision == 0:
                    await self.kv.create(name, msgspec.json.encode(state))
                else:
                    await self.kv.update(name, msgspec.json.encode(state), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone else took or refilled first: look again
            return 0.0
