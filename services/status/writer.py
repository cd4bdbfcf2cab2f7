"""The projection writer: the `status` consumer's events folded per workflow (fold.py) into the
cache (cache.py) and written to KV `wf_status` when due (pacing.py).

Each batch of events is folded per workflow and written once per workflow (coalesced), with
compare-and-set on the KV revision, so several replicas can write without losing an update: on a
conflict the replica reloads the stored StatusResp and applies its events again (the fold is
idempotent). Events are acked only after their workflow's write succeeded."""

from __future__ import annotations

import asyncio
import time

import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from schemas import Event, StatusResp, Submitted, event_decoder, omits_jobs, status_decoder
from services.common.bus import decode_or_terminate
from services.common.logs import bound
from services.workreqs import fits, resolved, submitted

from . import fold
from .cache import Cache, Entry
from .pacing import MIN_WRITE_INTERVAL_S, head
from .storage import encode_status, fold_history

log = structlog.get_logger()
BATCH = 256
GATHER_S = 0.02  # a batch not full at once waits up to this long to fill: fewer rounds, at most this much lag
WRITES_AT_ONCE = 64


class Projection:
    def __init__(self, nc: Client, js: JetStreamContext, kv: KeyValue) -> None:
        self.nc = nc
        self.js = js
        self.kv = kv
        self.cache = Cache()
        self.lock = asyncio.Lock()

    async def _load(self, wf_id: str) -> tuple[StatusResp | None, int, bool]:
        """What KV holds for the workflow: its StatusResp, revision, and whether that StatusResp was
        rebuilt from WF_EVENTS (KV held a summary). A rebuilt one already has every event stored
        so far, newer than KV's: it must be written even if no event folded in changes it."""
        try:
            entry = await self.kv.get(wf_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None, 0, False
        if not entry.value or entry.revision is None:
            return None, 0, False
        if omits_jobs(entry.value):  # a summary (too many jobs for one message): fold the history again
            started = time.perf_counter()
            status = await fold_history(self.js, wf_id)
            log.info("status_rebuilt_from_history", workflow_id=wf_id,
                     duration_ms=round((time.perf_counter() - started) * 1000, 2))
            return status, entry.revision, True
        return status_decoder.decode(entry.value), entry.revision, False

    async def _seed(self, wf_id: str) -> StatusResp | None:
        """A workflow's first StatusResp, from its submitted event."""
        ev = await submitted(self.js, wf_id)
        return fold.new_status(ev) if ev is not None else None

    async def _entry(self, wf_id: str, first: Event) -> Entry | None:
        entry = self.cache.get(wf_id)
        if entry is not None:
            return entry
        if isinstance(first, Submitted):
            # A new workflow, no look-up: its KV entry is written with create, so if one exists
            # after all (a redelivery, another replica) the write conflicts and reloads it. Its first
            # write waits for the verdict, which usually follows within milliseconds (one write
            # instead of two), or for the write interval.
            sub = await resolved(self.js, first)
            assert isinstance(sub, Submitted)
            entry = Entry(fold.new_status(sub), 0, last_write=time.monotonic())
        else:
            loaded, revision, rebuilt = await self._load(wf_id)
            status = loaded if loaded is not None else await self._seed(wf_id)
            if status is None:
                return None
            entry = Entry(status, revision, urgent=revision == 0 or rebuilt, rebuilt=rebuilt)
        self.cache.put(wf_id, entry)
        return entry

    async def add(self, wf_id: str, items: list[tuple[Msg, Event]]) -> bool:
        """Fold events in memory; False when the workflow has no submission (nothing was folded)."""
        entry = await self._entry(wf_id, items[0][1])
        if entry is None:
            return False
        before = head(entry.status)
        changed = False
        for _, ev in items:
            changed = fold.apply(entry.status, ev) or changed
        entry.urgent = entry.urgent or head(entry.status) != before
        if changed or entry.revision == 0 or entry.rebuilt:
            entry.events.extend(ev for _, ev in items)
            entry.msgs.extend(msg for msg, _ in items)
            self.cache.mark_unwritten(wf_id)
        else:  # nothing new (duplicates): nothing to write
            for msg, _ in items:
                await msg.ack()
        return True

    async def flush_due(self) -> None:
        due = self.cache.due(time.monotonic())
        # Written concurrently, WRITES_AT_ONCE at a time: their requests (and then their acks) leave
        # in one socket write rather than one round trip after another.
        for first in range(0, len(due), WRITES_AT_ONCE):
            batch = due[first:first + WRITES_AT_ONCE]
            results = await asyncio.gather(*(self._write(wf_id, entry) for wf_id, entry in batch),
                                           return_exceptions=True)
            for (wf_id, entry), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    raise result
                self.cache.written(wf_id, entry, summarised=not fits(self.nc.max_payload, entry.size))
        self.cache.evict(time.monotonic())

    def forget(self, wf_id: str | None = None) -> None:
        """Drop one workflow's unwritten state (None: every workflow's); it is reloaded from KV."""
        self.cache.forget(wf_id)

    async def _write(self, wf_id: str, entry: Entry) -> None:
        started = time.perf_counter()
        with bound(workflow_id=wf_id):
            for _attempt in range(10):
                data, size = encode_status(entry.status, self.nc.max_payload)
                try:
                    if entry.revision == 0:
                        entry.revision = await self.kv.create(wf_id, data)
                    else:
                        entry.revision = await self.kv.update(wf_id, data, last=entry.revision)
                    break
                except nats.js.errors.KeyWrongLastSequenceError:
                    # another writer won: take what it wrote and apply ours again (the fold is idempotent)
                    stored, entry.revision, _ = await self._load(wf_id)
                    if stored is not None:
                        entry.status = stored
                        for ev in entry.events:
                            fold.apply(entry.status, ev)
            else:
                raise RuntimeError(f"could not write the status of {wf_id} after 10 conflicts")
            for msg in entry.msgs:
                await msg.ack()
            log.info("events_folded", count=len(entry.events), bytes=len(data), outcome="ok",
                     duration_ms=round((time.perf_counter() - started) * 1000, 2))
            entry.events, entry.msgs, entry.urgent, entry.rebuilt = [], [], False, False
            entry.last_write, entry.size = time.monotonic(), size


async def handle_batch(projection: Projection, msgs: list[Msg]) -> None:
    by_workflow: dict[str, list[tuple[Msg, Event]]] = {}
    for msg in msgs:
        ev = await decode_or_terminate(msg, event_decoder)
        if ev is not None:
            by_workflow.setdefault(ev.id, []).append((msg, ev))
    async with projection.lock:
        for wf_id, items in by_workflow.items():
            try:
                if not await projection.add(wf_id, items):
                    # `submitted` is always stored before anything else of a workflow: these were
                    # injected, and redelivering them would never help
                    log.error("events_without_submission_terminated", workflow_id=wf_id, count=len(items))
                    for msg, _ in items:
                        await msg.term()
            except Exception:  # the boundary: leave un-acked for redelivery
                log.exception("projection_fold_failed", workflow_id=wf_id)
                projection.forget(wf_id)
        await flush_guarded(projection)


async def flush_guarded(projection: Projection) -> None:
    try:
        await projection.flush_due()
    except Exception:  # the boundary: un-acked events are redelivered; start from KV again
        log.exception("projection_write_failed")
        projection.forget()


async def flush_periodically(projection: Projection, stop: asyncio.Event) -> None:
    """Writes coalesced projections when they are due, also while no new event arrives."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), MIN_WRITE_INTERVAL_S)
        except TimeoutError:
            pass
        async with projection.lock:
            await flush_guarded(projection)
