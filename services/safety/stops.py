"""Emergency stop: KV `wf_es`, WorkReq name -> `go`, `pause` or `stop`; a missing key or any other value is stop.

Three states (`EmergencyStops.state`): `go` runs; `pause` dispatches nothing new for the name while
its running jobs finish (and `go` resumes); `stop` ends every workflow of the name and cancels its
running jobs. Only the exact values `go` and `pause` are anything but stop.

Every service that must react follows the bucket's stream (`KV_wf_es`) with an ordered consumer,
as a KV watch does, so a `nats kv put wf_es NAME stop` reaches intake, executors and runners within
milliseconds. A KV watch alone misses deletions that leave no per-key marker, and would keep
enforcing `go` for names that are gone:

- a message with `Nats-Rollup: all` (on any key, e.g. `nats pub '$KV.wf_es.X' go -H Nats-Rollup:all`)
  removes every other key of the bucket: the follower reads that header and drops every name
  written before it, at once;
- a purge of the whole stream (`nats stream purge KV_wf_es`, or with a subject filter), a deleted
  message, keys aged out: no message at all. Four times a second each follower compares what it
  holds with the stream's own state (its message count, one per key including delete markers,
  and its last sequence); when they differ it reads the whole bucket again and every name that is
  no longer `go` stops. So within about 0.3 s of any deletion, every service treats the names
  concerned as `stop`.

`EsView` (pure) is what a follower holds. wf-intake reports the names it holds in its `$SRV.STATS`
(the `submit` endpoint's `data`: `{"emergency_stops": {name: value}}`), and `wf es show` prints
that (`enforced_emergency_stops`): what the services enforce, whatever an operator's view of the
bucket says (a mirror of it does not follow rollups or purges). Without an answer it reads the
bucket itself the way the services do (`read_emergency_stops`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from schemas import subjects
from services.common.configfile import load_config
from services.common.jsonstream import json_stream
from services.common.topology import ES_BUCKET

log = structlog.get_logger()
GO = "go"
PAUSE = "pause"
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


Listener = Callable[[str, str], None]  # (WorkReq name, its state now: GO, PAUSE or STOP)


def state_of(value: str | None) -> str:
    """The state a value means: exactly `go` or `pause`, else (missing, anything else) `stop`."""
    return value if value is not None and value in (GO, PAUSE) else STOP


VERIFY_S = 0.25  # how often a follower checks what it holds against the stream's own state
BEHIND_LIMIT_S = 2.0  # a follower this far behind the stream reads the whole bucket again
SNAPSHOT_TIMEOUT_S = 10.0
# Headers of KV messages (the KV protocol's, as nats-py and the nats CLI write them)
KV_OPERATION = "KV-Operation"
MARKER_REASON = "Nats-Marker-Reason"  # server-placed markers (2.11+): MaxAge, Purge, Remove
ROLLUP = "Nats-Rollup"
BY, AT, WHY = "Wf-By", "Wf-At", "Wf-Why"  # who changed a name, when, why (services/safety/gate.py)


@dataclass(frozen=True)
class EsMessage:
    key: str
    seq: int  # stream sequence
    value: str | None  # None: a delete or purge marker
    rollup_all: bool = False  # `Nats-Rollup: all`: every message before it is gone
    change: Change | None = None  # who made it, when and why (None: written inside WF, e.g. by an admin)


@dataclass(frozen=True)
class Change:
    """Who wrote a name's last message, when and why: the emergency-stop gate's headers
    (services/safety/gate.py), or the admin's `wf es` and `wf up`'s seeding."""

    by: str
    at: str = ""
    why: str = ""


def es_message(subject: str, seq: int, headers: dict[str, str] | None, data: bytes, bucket: str = ES_BUCKET) -> EsMessage | None:
    """One message of the bucket's stream, read as the KV protocol means it (None: not a key of it)."""
    prefix = subjects.kv_prefix(bucket)
    if not subject.startswith(prefix):
        return None
    headers = headers or {}
    deleted = headers.get(KV_OPERATION) in ("DEL", "PURGE") or MARKER_REASON in headers
    return EsMessage(
        key=subject[len(prefix):], seq=seq, value=None if deleted else data.decode(errors="replace"),
        rollup_all=headers.get(ROLLUP, "").lower() == "all",
        change=Change(headers[BY], headers.get(AT, ""), headers.get(WHY, "")) if headers.get(BY) else None,
    )


@dataclass
class EsView:
    """The bucket as its stream's messages say: pure, so unit tests replay histories into it."""

    values: dict[str, str] = field(default_factory=dict)  # live keys -> value
    seqs: dict[str, int] = field(default_factory=dict)  # key -> sequence of its message (values and markers)
    last_seq: int = 0
    changes: dict[str, Change] = field(default_factory=dict)  # key -> who wrote its last message

    def apply(self, msg: EsMessage) -> dict[str, str | None]:
        """Record a message; returns the keys whose value changed (None: gone)."""
        changed: dict[str, str | None] = {}
        if msg.rollup_all:
            for key, seq in list(self.seqs.items()):
                if seq < msg.seq and key != msg.key:
                    del self.seqs[key]
                    self.changes.pop(key, None)
                    if self.values.pop(key, None) is not None:
                        changed[key] = None
        if msg.seq >= self.seqs.get(msg.key, 0):
            self.seqs[msg.key] = msg.seq
            self.changes[msg.key] = msg.change or Change(by="")
            old = self.values.get(msg.key)
            if msg.value is None:
                self.values.pop(msg.key, None)
            else:
                self.values[msg.key] = msg.value
            if old != msg.value:
                changed[msg.key] = msg.value
        self.last_seq = max(self.last_seq, msg.seq)
        return changed

    def agrees_with(self, messages: int, last_seq: int) -> bool | None:
        """Whether the stream's state (its message count and last sequence) is what this view
        explains: one message per key it holds. None while the stream has messages it has not
        seen yet (they are on their way); False when messages went without a trace (a purge)."""
        if last_seq > self.last_seq:
            return None
        return last_seq == self.last_seq and messages == len(self.seqs)


async def _subscribe(js: JetStreamContext, bucket: str, queue: asyncio.Queue[Msg]) -> JetStreamContext.PushSubscription:
    async def deliver(msg: Msg) -> None:
        queue.put_nowait(msg)

    return await js.subscribe(
        subjects.kv_all(bucket), stream=f"KV_{bucket}", cb=deliver, ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, idle_heartbeat=2.0, inactive_threshold=300.0,
    )


def _read(msg: Msg, bucket: str) -> EsMessage | None:
    return es_message(msg.subject, msg.metadata.sequence.stream, msg.headers, msg.data, bucket)


async def _snapshot(sub: JetStreamContext.PushSubscription, queue: asyncio.Queue[Msg], bucket: str) -> EsView:
    """Every key's last message, as the consumer delivers them from its start."""
    view = EsView()
    info = await sub.consumer_info()
    if info.num_pending == 0 and (info.delivered is None or not info.delivered.consumer_seq):
        return view  # an empty bucket
    async with asyncio.timeout(SNAPSHOT_TIMEOUT_S):
        while True:
            msg = await queue.get()
            parsed = _read(msg, bucket)
            if parsed is not None:
                view.apply(parsed)
            if msg.metadata.num_pending == 0:
                return view


async def read_emergency_stops(js: JetStreamContext, bucket: str = ES_BUCKET) -> dict[str, str]:
    """The bucket's keys and values once, read as the services read them (`wf es show`)."""
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await _subscribe(js, bucket, queue)
    try:
        return (await _snapshot(sub, queue, bucket)).values
    finally:
        await sub.unsubscribe()


STATS_KEY = "emergency_stops"
CHANGES_KEY = "emergency_stop_changes"  # name -> {"by", "at", "why"} of its last change
REPORTING_SERVICE, REPORTING_ENDPOINT = "wf-intake", "submit"


async def enforced_emergency_stops(nc: Client, timeout_s: float = 2.0) -> dict[str, str] | None:
    """The names and values wf-intake enforces (its `$SRV.STATS`), or None when none answers."""
    stats = await _reported(nc, timeout_s)
    return None if stats is None else {str(k): str(v) for k, v in stats[STATS_KEY].items()}


async def emergency_stop_changes(nc: Client, timeout_s: float = 2.0) -> dict[str, dict[str, str]]:
    """Who made each name's last change, when and why, as wf-intake holds it ({} when unknown)."""
    stats = await _reported(nc, timeout_s)
    changes = (stats or {}).get(CHANGES_KEY)
    return {str(k): {f: str(v.get(f, "")) for f in ("by", "at", "why")}
            for k, v in changes.items() if isinstance(v, dict)} if isinstance(changes, dict) else {}


async def _reported(nc: Client, timeout_s: float) -> dict[str, Any] | None:
    try:
        reply = await nc.request(subjects.micro_stats(REPORTING_SERVICE), b"", timeout=timeout_s)
        stats = json.loads(reply.data)
    except (nats.errors.Error, TimeoutError, ValueError):
        return None
    for endpoint in stats.get("endpoints") or []:
        data = endpoint.get("data") if isinstance(endpoint, dict) else None
        if endpoint.get("name") == REPORTING_ENDPOINT and isinstance(data, dict) and isinstance(data.get(STATS_KEY), dict):
            return data
    return None


class EmergencyStops:
    """The live state of `wf_es` in this process."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._changes: dict[str, Change] = {}
        self.ready = asyncio.Event()  # set once the current values are loaded
        self._listeners: list[Listener] = []

    def is_go(self, name: str) -> bool:
        return self._values.get(name) == GO

    def state(self, name: str) -> str:
        """GO, PAUSE or STOP (a missing name, any other value)."""
        return state_of(self._values.get(name))

    def is_stopped(self, name: str) -> bool:
        return self.state(name) == STOP

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def snapshot(self) -> dict[str, str]:
        return dict(self._values)

    def stats_data(self, endpoint: str) -> dict[str, dict[str, str] | dict[str, dict[str, str]]] | None:
        """For `start_micro(stats_handler=...)`: the reporting endpoint's `data` in `$SRV.STATS`."""
        if endpoint != REPORTING_ENDPOINT:
            return None
        changes = {name: {"by": c.by, "at": c.at, "why": c.why} for name, c in self._changes.items() if c.by}
        return {STATS_KEY: self.snapshot(), CHANGES_KEY: changes}

    def _set(self, name: str, value: str | None, change: Change | None = None) -> None:
        was = self.state(name)
        if value is None:
            self._values.pop(name, None)
        else:
            self._values[name] = value
        now = self.state(name)
        if now != was:
            log.info("emergency_stop_changed", workreq=name, state=now,
                     by=change.by if change else "", why=change.why if change else "")
            for listener in self._listeners:
                listener(name, now)

    def _replace(self, values: dict[str, str]) -> None:
        """Take a whole new state: every name not in it is gone (stopped)."""
        for name in sorted(set(self._values) | set(values)):
            self._set(name, values.get(name))

    async def follow(self, js: JetStreamContext, stop: asyncio.Event, bucket: str = ES_BUCKET) -> None:
        """Follow the bucket until `stop`; never gives up (a lost connection or a refused
        subscription is logged and retried), never lets a name it cannot vouch for stay `go`."""
        while not stop.is_set():
            try:
                await self._follow_once(js, bucket, stop)
                continue  # the stream held what the view could not explain: read it all again at once
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("emergency_stop_watch_restarting", error=repr(exc))
            except Exception:  # a bug must not freeze the state: read it all again
                log.exception("emergency_stop_watch_crashed")
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass

    async def _follow_once(self, js: JetStreamContext, bucket: str, stop: asyncio.Event) -> None:
        """One subscription: the whole bucket, then every change, until the stream holds something
        the view cannot explain (then the caller reads everything again)."""
        # Every message up to the stream's last sequence now is in the snapshot (or gone): a stream
        # whose last messages were removed must not look, forever, as if they were still to come.
        floor_seq = (await js.stream_info(f"KV_{bucket}")).state.last_seq
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        sub = await _subscribe(js, bucket, queue)
        try:
            view = await _snapshot(sub, queue, bucket)
            view.last_seq = max(view.last_seq, floor_seq)
            self._replace(view.values)
            self._changes = view.changes
            self.ready.set()
            await self._live(js, bucket, queue, view, stop)
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass

    async def _live(self, js: JetStreamContext, bucket: str, queue: asyncio.Queue[Msg], view: EsView,
                    stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_check = loop.time() + VERIFY_S
        behind_since: float | None = None
        while not stop.is_set():
            msg: Msg | None = None
            if not queue.empty():  # what is here first (wait_for with no time left would not take it)
                msg = queue.get_nowait()
            else:
                try:
                    msg = await asyncio.wait_for(queue.get(), max(0.001, next_check - loop.time()))
                except TimeoutError:
                    pass
            if msg is not None:
                parsed = _read(msg, bucket)
                if parsed is not None:
                    for name, value in view.apply(parsed).items():
                        self._set(name, value, parsed.change if name == parsed.key else None)
                    if parsed.rollup_all:
                        log.warning("emergency_stop_rollup", key=parsed.key, seq=parsed.seq,
                                    outcome="every other name removed: stopped")
            if loop.time() < next_check or not queue.empty():
                continue
            next_check = loop.time() + VERIFY_S
            try:
                state = (await js.stream_info(f"KV_{bucket}")).state
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("emergency_stop_check_failed", error=repr(exc))
                continue
            agrees = view.agrees_with(state.messages, state.last_seq)
            if agrees is None:
                behind_since = behind_since or loop.time()
                if loop.time() - behind_since < BEHIND_LIMIT_S:
                    continue
                reason = "the watch fell behind the stream"
            elif agrees:
                behind_since = None
                continue
            else:
                reason = "messages left the stream without a marker (a purge, a deleted message)"
            log.warning("emergency_stops_reread", reason=reason, stream_messages=state.messages,
                        stream_last_seq=state.last_seq, watched_keys=len(view.seqs), watched_last_seq=view.last_seq)
            return
