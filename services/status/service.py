"""wf-status at run time: the projection writer and the `wf.api.status` endpoint.

Each batch of events is folded per workflow and written once per workflow (coalesced), with
compare-and-set on the KV revision, so several replicas can write without losing an update: on a
conflict the replica reloads the stored StatusResp and applies its events again (the fold is
idempotent). Events are acked only after their workflow's write succeeded."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

import msgspec
import nats.errors
import nats.js.errors
import nats.micro
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.micro.request import Request

from schemas import Event, StatusResp, Submitted, encoder, event_decoder, status_decoder
from services.common.bus import connect, last_event, read_history
from services.common.endpoint import ApiError, ConcurrentEndpoint, decode_id
from services.common.lifecycle import bind_durable, fetch_batches, shutdown, start_micro, when_ready
from services.common.settings import VERSION, Settings
from services.common.topology import EVENTS_STREAM, STATUS_BUCKET, STATUS_CONSUMER

from . import fold

log = structlog.get_logger()
CACHE_SIZE = 2000
BATCH = 256


class Projection:
    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self.js = js
        self.kv = kv
        # workflow id -> (StatusResp, KV revision); the projection's own recent writes
        self.cache: OrderedDict[str, tuple[StatusResp, int]] = OrderedDict()

    async def load(self, wf_id: str) -> tuple[StatusResp | None, int]:
        cached = self.cache.get(wf_id)
        if cached is not None:
            self.cache.move_to_end(wf_id)
            return cached
        try:
            entry = await self.kv.get(wf_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None, 0
        if not entry.value or entry.revision is None:
            return None, 0
        return status_decoder.decode(entry.value), entry.revision

    async def seed(self, wf_id: str) -> StatusResp | None:
        """A workflow's first StatusResp, from its submitted event."""
        msg = await last_event(self.js, f"wf.evt.{wf_id}.submitted")
        if msg is None:
            return None
        ev = event_decoder.decode(msg.data)
        return fold.new_status(ev) if isinstance(ev, Submitted) else None

    async def fold_and_write(self, wf_id: str, events: list[Event]) -> None:
        for _attempt in range(10):
            status, revision = await self.load(wf_id)
            changed = False
            if status is None:
                first = events[0]
                status = fold.new_status(first) if isinstance(first, Submitted) else await self.seed(wf_id)
                if status is None:
                    log.error("events_without_submission", workflow_id=wf_id, count=len(events))
                    return
                changed = True
            for ev in events:
                changed = fold.apply(status, ev) or changed
            if not changed:
                return
            try:
                if revision == 0:
                    revision = await self.kv.create(wf_id, encoder.encode(status))
                else:
                    revision = await self.kv.update(wf_id, encoder.encode(status), last=revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                self.cache.pop(wf_id, None)  # another writer won: reload and apply again
                continue
            self.cache[wf_id] = (status, revision)
            self.cache.move_to_end(wf_id)
            while len(self.cache) > CACHE_SIZE:
                self.cache.popitem(last=False)
            return
        raise RuntimeError(f"could not write the status of {wf_id} after 10 conflicts")


async def handle_batch(projection: Projection, msgs: list[Msg]) -> None:
    by_workflow: dict[str, list[tuple[Msg, Event]]] = {}
    for msg in msgs:
        try:
            ev = event_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            log.error("bad_event_terminated", subject=msg.subject, error=str(exc))
            await msg.term()
            continue
        by_workflow.setdefault(ev.id, []).append((msg, ev))
    for wf_id, items in by_workflow.items():
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(workflow_id=wf_id):
            try:
                await projection.fold_and_write(wf_id, [ev for _, ev in items])
            except Exception:  # the boundary: leave un-acked for redelivery
                log.exception("projection_write_failed", count=len(items), outcome="retry")
                continue
            for msg, _ in items:
                await msg.ack()
            # one line per workflow per batch: the events of one fetch are folded and written together
            log.info("events_folded", count=len(items), outcome="ok", duration_ms=round((time.perf_counter() - started) * 1000, 2))


class StatusApi:
    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self.js = js
        self.kv = kv

    async def status(self, request: Request) -> bytes:
        wf_id = decode_id(request.data)
        try:
            value = (await self.kv.get(wf_id)).value
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            value = None
        if not value:
            return await self._fold_from_stream(wf_id)
        status = status_decoder.decode(value)
        if status.verdict != "pending":
            return value
        # The submitter may already hold the verdict the projection has not folded yet.
        for verdict in ("approved", "rejected"):
            msg = await last_event(self.js, f"wf.evt.{wf_id}.{verdict}")
            if msg is not None:
                fold.apply(status, event_decoder.decode(msg.data))
                return encoder.encode(status)
        return value

    async def _fold_from_stream(self, wf_id: str) -> bytes:
        # Not projected yet (the projection lags by milliseconds): fold the stream directly.
        if await last_event(self.js, f"wf.evt.{wf_id}.submitted") is None:
            raise ApiError(404, f"unknown id {wf_id!r}")
        events = [event_decoder.decode(m.data) for m in await read_history(self.js, wf_id)]
        first = events[0]
        assert isinstance(first, Submitted)
        status = fold.new_status(first)
        for ev in events:
            fold.apply(status, ev)
        return encoder.encode(status)


async def main(settings: Settings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, "wf-status")
    js = nc.jetstream()
    kv = await when_ready(lambda: js.key_value(STATUS_BUCKET), stop, what=STATUS_BUCKET)
    api = StatusApi(js, kv)
    service = await start_micro(nc, "wf-status", VERSION, "status projection and queries")
    endpoint = ConcurrentEndpoint("status", api.status, settings.max_in_flight)
    await endpoint.register(service, "wf.api.status")
    projection = Projection(js, kv)
    sub = await bind_durable(js, EVENTS_STREAM, STATUS_CONSUMER, stop)
    async for batch in fetch_batches(sub, BATCH, stop):
        await handle_batch(projection, batch)
    await service.stop()
    await endpoint.drain()
    await shutdown(nc, sub)
