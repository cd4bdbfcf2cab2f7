"""wf-status at run time: the projection writer and the `wf.api.status` endpoint.

Each batch of events is folded per workflow and written once per workflow (coalesced), with
compare-and-set on the KV revision, so several replicas can write without losing an update: on a
conflict the replica reloads the stored StatusResp and applies its events again (the fold is
idempotent). Events are acked only after their workflow's write succeeded."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import msgspec
import nats.errors
import nats.js.errors
import nats.micro
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.micro.request import Request

from schemas import (
    DECODE_ERRORS,
    Event,
    LogsReply,
    StatusResp,
    Submitted,
    encoder,
    event_decoder,
    logs_request_decoder,
    omits_jobs,
    status_decoder,
    summarise,
)
from services.common.bus import connect, decode_or_terminate, last_event, read_history, stored_verdict
from services.common.endpoint import ApiError, ConcurrentEndpoint, decode_id, find_duplicate_key
from services.common.ids import is_valid_id
from services.common.lifecycle import bind_durable, fetch_batches, shutdown, start_micro, when_ready
from services.common.logs import bound
from services.common.settings import VERSION, Settings
from services.common.topology import (
    EVENTS_STREAM,
    OUTPUT_BUCKET,
    STATUS_ACK_WAIT_S,
    STATUS_BUCKET,
    STATUS_CONSUMER,
)
from services.common.workreqs import fits, resolved, submitted

from . import fold

log = structlog.get_logger()
CACHE_SIZE = 2000
BATCH = 256
GATHER_S = 0.02  # a batch not full at once waits up to this long to fill: fewer rounds, at most this much lag


# A workflow's StatusResp is rewritten at most once per interval that grows with its size, so the
# bytes written per job stay flat as workflows grow (rewriting it per batch was quadratic).
MIN_WRITE_INTERVAL_S = 0.05
WRITE_BYTES_PER_S = 20_000_000
MAX_UNWRITTEN_EVENTS = 5_000
WRITES_AT_ONCE = 64
REBUILD_TIMEOUT_S = 300.0  # reading a large workflow's whole history back from WF_EVENTS
# An ended workflow is forgotten once written (a late event reloads it from KV: one get), except one
# written as a summary: its reload is a rebuild from the whole history, which once per batch of late
# events or redeliveries (those come after the consumer's ack wait) would be quadratic. Such a one
# stays in memory this long after its last write.
ENDED_KEEP_S = 2 * STATUS_ACK_WAIT_S


OUTPUT_SHORT = 256  # bytes of each job's `output` kept when the whole StatusResp would not fit


def encode_status(status: StatusResp, max_payload: int) -> tuple[bytes, int]:
    """The StatusResp's JSON; when the whole would exceed the server's max payload, first the same
    with each job's `output` cut to its last OUTPUT_SHORT bytes, then without outputs (`wf logs`
    has them), and only then its StatusSummary (a workflow of very many jobs); and the whole's
    size, which paces its writes."""
    data = encoder.encode(status)
    if fits(max_payload, len(data)):
        return data, len(data)
    if any(job.output for block in status.blocks for job in block.jobs):
        for keep in (OUTPUT_SHORT, 0):
            shorter = msgspec.structs.replace(status, blocks=[
                msgspec.structs.replace(block, jobs=[
                    msgspec.structs.replace(job, output=_last_bytes(job.output, keep)) for job in block.jobs])
                for block in status.blocks])
            trimmed = encoder.encode(shorter)
            if fits(max_payload, len(trimmed)):
                return trimmed, len(data)
    return encoder.encode(summarise(status)), len(data)


def _last_bytes(text: str, size: int) -> str:
    raw = text.encode("utf-8")
    return text if len(raw) <= size else raw[len(raw) - size:].decode("utf-8", "ignore")


async def fold_history(js: JetStreamContext, wf_id: str) -> StatusResp | None:
    """The workflow's StatusResp folded from its whole history in WF_EVENTS (None: not submitted)."""
    if await last_event(js, f"wf.evt.{wf_id}.submitted") is None:
        return None
    events = [event_decoder.decode(m.data) for m in await read_history(js, wf_id, timeout_s=REBUILD_TIMEOUT_S)]
    first = await resolved(js, events[0])
    assert isinstance(first, Submitted)
    status = fold.new_status(first)
    for ev in events:
        fold.apply(status, ev)
    return status


@dataclass
class Entry:
    """One workflow's projection in memory: what KV has (revision) plus what it does not yet."""

    status: StatusResp
    revision: int  # 0: not in KV yet
    events: list[Event] = field(default_factory=list)  # folded in, not yet written
    msgs: list[Msg] = field(default_factory=list)  # to ack once written
    urgent: bool = False  # the head changed (new, verdict, started, ended): write now
    rebuilt: bool = False  # folded from WF_EVENTS, newer than KV's summary: write even without change
    last_write: float = 0.0
    size: int = 0

    def due(self, now: float) -> bool:
        if not self.events:
            return False
        interval_s = max(MIN_WRITE_INTERVAL_S, self.size / WRITE_BYTES_PER_S)
        return self.urgent or len(self.events) >= MAX_UNWRITTEN_EVENTS or now - self.last_write >= interval_s


def _head(status: StatusResp) -> tuple[str, ...]:
    return (status.verdict, status.status, status.reason, status.executed_by, status.cancelled_by,
            str(len(status.approvals)), str(status.pauses), str(status.resumes))  # an approval is written at once: exec may wait for it


class Projection:
    def __init__(self, nc: Client, kv: KeyValue) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.kv = kv
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        # the workflows with events not yet written, oldest first: each flush looks at these only,
        # not at every workflow in memory (up to CACHE_SIZE approved ones may wait for their exec)
        self.unwritten: dict[str, None] = {}
        # the ended workflows kept in memory (written as summaries), with their last write, oldest first
        self.ended: dict[str, float] = {}
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
        entry = self.entries.get(wf_id)
        if entry is None:
            if isinstance(first, Submitted):
                # A new workflow, no look-up: its KV entry is written with create, so if one exists
                # after all (a redelivery, another replica) the write conflicts and reloads it. Its first
                # write waits for the verdict, which usually follows within milliseconds (one write
                # instead of two), or for the write interval.
                status = fold.new_status(await resolved(self.js, first))  # type: ignore[arg-type]
                entry = Entry(status, 0, last_write=time.monotonic())
            else:
                status, revision, rebuilt = await self._load(wf_id)
                if status is None:
                    status = await self._seed(wf_id)
                    if status is None:
                        return None
                entry = Entry(status, revision, urgent=revision == 0 or rebuilt, rebuilt=rebuilt)
            self.entries[wf_id] = entry
        self.entries.move_to_end(wf_id)
        return entry

    async def add(self, wf_id: str, items: list[tuple[Msg, Event]]) -> bool:
        """Fold events in memory; False when the workflow has no submission (nothing was folded)."""
        entry = await self._entry(wf_id, items[0][1])
        if entry is None:
            return False
        head = _head(entry.status)
        changed = False
        for _, ev in items:
            changed = fold.apply(entry.status, ev) or changed
        entry.urgent = entry.urgent or _head(entry.status) != head
        if changed or entry.revision == 0 or entry.rebuilt:
            entry.events.extend(ev for _, ev in items)
            entry.msgs.extend(msg for msg, _ in items)
            self.unwritten[wf_id] = None
        else:  # nothing new (duplicates): nothing to write
            for msg, _ in items:
                await msg.ack()
        return True

    async def flush_due(self) -> None:
        now = time.monotonic()
        due: list[tuple[str, Entry]] = []
        for wf_id in list(self.unwritten):
            entry = self.entries.get(wf_id)
            if entry is None or not entry.events:
                del self.unwritten[wf_id]
            elif entry.due(now):
                due.append((wf_id, entry))
        # Written concurrently, WRITES_AT_ONCE at a time: their requests (and then their acks) leave
        # in one socket write rather than one round trip after another.
        for first in range(0, len(due), WRITES_AT_ONCE):
            batch = due[first:first + WRITES_AT_ONCE]
            results = await asyncio.gather(*(self._write(wf_id, entry) for wf_id, entry in batch),
                                           return_exceptions=True)
            for (wf_id, entry), result in zip(batch, results):
                if isinstance(result, BaseException):
                    raise result
                del self.unwritten[wf_id]
                if entry.status.status in ("completed", "failed"):
                    self.ended.pop(wf_id, None)
                    if fits(self.nc.max_payload, entry.size):
                        del self.entries[wf_id]
                    else:
                        self.ended[wf_id] = entry.last_write
        self._evict(time.monotonic())

    def forget(self, wf_id: str | None = None) -> None:
        """Drop one workflow's unwritten state (None: every workflow's); it is reloaded from KV."""
        if wf_id is None:
            self.entries.clear()
            self.unwritten.clear()
            self.ended.clear()
        else:
            self.entries.pop(wf_id, None)
            self.unwritten.pop(wf_id, None)
            self.ended.pop(wf_id, None)

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

    def _evict(self, now: float) -> None:
        """Forget the summarised workflows ended more than ENDED_KEEP_S ago, then the oldest with
        nothing unwritten beyond CACHE_SIZE: memory stays proportional to the workflows running."""
        for wf_id, ended_at in list(self.ended.items()):
            if now - ended_at < ENDED_KEEP_S:
                break
            del self.ended[wf_id]
            entry = self.entries.get(wf_id)
            if entry is not None and not entry.events:
                del self.entries[wf_id]
        if len(self.entries) <= CACHE_SIZE:
            return
        for wf_id in list(self.entries):
            if len(self.entries) <= CACHE_SIZE:
                return
            if not self.entries[wf_id].events:
                del self.entries[wf_id]
                self.ended.pop(wf_id, None)


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


class StatusApi:
    def __init__(self, nc: Client, kv: KeyValue, output_kv: KeyValue | None = None) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.kv = kv
        self.output_kv = output_kv

    async def status(self, request: Request) -> bytes:
        return await self._status_json(decode_id(request.data))

    async def logs(self, request: Request) -> bytes:
        """`wf.api.logs` {"id", "block", "job"}: one job's whole kept output (LogsReply)."""
        try:
            req = logs_request_decoder.decode(request.data)
        except DECODE_ERRORS as exc:
            raise ApiError(400, f'request must be JSON {{"id": ID, "block": N, "job": N}}: {exc}') from None
        duplicate = find_duplicate_key(request.data)
        if duplicate:
            raise ApiError(400, f'request must be JSON {{"id": ID, "block": N, "job": N}}: {duplicate}')
        if not is_valid_id(req.id):
            raise ApiError(404, f"unknown id {req.id!r}")
        status = status_decoder.decode(await self._status_json(req.id))
        if not 0 <= req.block < len(status.blocks):
            raise ApiError(404, f"workflow {req.id} has no block {req.block} (it has {len(status.blocks)})")
        jobs = status.blocks[req.block].jobs
        if jobs and not 0 <= req.job < len(jobs):
            raise ApiError(404, f"block {req.block} of workflow {req.id} has no job {req.job} (it has {len(jobs)})")
        job = jobs[req.job] if jobs else None  # (a summary of a very large workflow lists no jobs)
        if job is None and req.job < 0:
            raise ApiError(404, f"block {req.block} of workflow {req.id} has no job {req.job}")
        output, kept = (job.output if job else ""), False
        if self.output_kv is not None:
            try:
                entry = await self.output_kv.get(f"{req.id}.{req.block}.{req.job}")
                output, kept = (entry.value or b"").decode("utf-8", "replace"), True
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                pass
        reply = LogsReply(id=req.id, block=req.block, job=req.job, name=job.name if job else "",
                          status=job.status if job else "", output=output, kept=kept)
        data = encoder.encode(reply)
        body = output
        while not fits(self.nc.max_payload, len(data)) and body:
            # JSON escapes a control byte as six: an output of them may not fit; its end does
            body = body[len(body) // 4 or len(body):]
            reply.output = "[wf: the start was cut to fit the reply]\n" + body
            data = encoder.encode(reply)
        return data

    async def _status_json(self, wf_id: str) -> bytes:
        try:
            value = (await self.kv.get(wf_id)).value
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            value = None
        if not value:
            return await self._fold_from_stream(wf_id)
        status = status_decoder.decode(value)
        if status.verdict != "pending" or omits_jobs(value):
            return value
        # The submitter may already hold the verdict the projection has not folded yet.
        msg = await stored_verdict(self.js, wf_id)
        if msg is None:
            return value
        fold.apply(status, event_decoder.decode(msg.data))
        return encoder.encode(status)

    async def _fold_from_stream(self, wf_id: str) -> bytes:
        # Not projected yet (the projection lags by milliseconds): fold the stream directly.
        status = await fold_history(self.js, wf_id)
        if status is None:
            raise ApiError(404, f"unknown id {wf_id!r}")
        return encode_status(status, self.nc.max_payload)[0]


async def main(settings: Settings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, "wf-status")
    js = nc.jetstream()
    kv = await when_ready(lambda: js.key_value(STATUS_BUCKET), stop, what=STATUS_BUCKET)
    output_kv = await when_ready(lambda: js.key_value(OUTPUT_BUCKET), stop, what=OUTPUT_BUCKET)
    api = StatusApi(nc, kv, output_kv)
    service = await start_micro(nc, "wf-status", VERSION, "status projection and queries")
    endpoint = ConcurrentEndpoint("status", api.status, settings.max_in_flight)
    await endpoint.register(service, "wf.api.status")
    logs_endpoint = ConcurrentEndpoint("logs", api.logs, settings.max_in_flight)
    await logs_endpoint.register(service, "wf.api.logs")
    projection = Projection(nc, kv)
    flusher = asyncio.create_task(flush_periodically(projection, stop))
    sub = await bind_durable(nc, EVENTS_STREAM, STATUS_CONSUMER, stop)
    async for batch in fetch_batches(sub, BATCH, stop, gather_s=GATHER_S):
        await handle_batch(projection, batch)
    await flusher
    await service.stop()
    await endpoint.drain()
    await logs_endpoint.drain()
    await shutdown(nc, sub)
