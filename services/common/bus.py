"""Connecting, publishing events and commands, and reading one workflow's history."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck, RawStreamMsg
from nats.js.kv import KeyValue

from schemas import (
    DECODE_ERRORS,
    Event,
    JobCommand,
    encoder,
    event_msg_id,
    event_subject,
    subjects,
)

from .requester import JetStream, Requester
from .topology import EVENTS_STREAM, SERVICE_INBOXES

log = structlog.get_logger()
T = TypeVar("T")

ACK_TIMEOUT_S = 5.0
# JetStream's publish headers: the duplicate window's id, and the check that a subject's last stored
# message is at a given sequence (0: none), on the published subject or on another one
MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
# JetStream's error codes for a failed `Nats-Expected-Last-Subject-Sequence` check
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})


def wrong_last_sequence(exc: nats.js.errors.APIError) -> bool:
    """Whether a publish was refused because its expected-last-sequence check failed."""
    return exc.err_code in WRONG_LAST_SEQUENCE


def tls_context(ca_file: str | None) -> ssl.SSLContext | None:
    """With a CA file (WF_NATS_CA: a CA, or the server's self-signed certificate), TLS trusting it."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def server_urls(url: str) -> list[str]:
    """The servers of a `WF_NATS_URL`: one URL, or several comma-separated (a cluster)."""
    return [u.strip() for u in url.split(",")]


def jetstream(nc: Client) -> JetStream:
    """The JetStream context every service builds in its main() and passes down: nats-py's, with its
    publishes, acks and last-message reads made through a Requester (services/common/requester.py)."""
    return JetStream(nc, Requester(nc))


async def connect(url: str, name: str, *, ca_file: str = "", connect_deadline_s: float = 30.0) -> Client:
    """Connect, retrying until the deadline; once connected, reconnect forever (to any server of a
    cluster: `url` may list several, comma-separated, and the cluster announces the others). With
    `ca_file` (WF_NATS_CA), TLS trusting it."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats_error", error=repr(exc))

    async def on_disconnect() -> None:
        log.warning("nats_disconnected")

    async def on_reconnect() -> None:
        log.info("nats_reconnected")

    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_deadline_s
    while True:
        try:
            return await nats.connect(
                server_urls(url),
                name=name,
                tls=tls_context(ca_file),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                inbox_prefix=SERVICE_INBOXES.get(name, "_INBOX"),
            )
        except (nats.errors.NoServersError, OSError) as exc:
            if loop.time() > deadline:
                raise
            log.info("nats_connect_retry", error=repr(exc))
            await asyncio.sleep(0.5)


async def decode_or_terminate(msg: Msg, decoder: msgspec.json.Decoder[T]) -> T | None:
    """The decoded message; or None, once it is terminated (never redelivered) and logged."""
    try:
        return decoder.decode(msg.data)
    except DECODE_ERRORS as exc:
        log.error("bad_message_terminated", subject=msg.subject, error=str(exc))
        await msg.term()
        return None


def times_delivered(msg: Msg) -> int:
    """`msg.metadata.num_delivered`, read from the ack subject (`$JS.ACK.<stream>.<consumer>.<delivered>.
    ...`) without building the metadata (a datetime and three dataclasses per message)."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[4])
    return msg.metadata.num_delivered  # the newer form, with domain and account hash


async def publish_event(js: JetStreamContext, ev: Event, headers: dict[str, str] | None = None) -> PubAck:
    """Publish one event (its `Nats-Msg-Id`, then `headers`) and return the stream's ack (`duplicate`:
    it was stored already)."""
    hdrs = {MSG_ID: event_msg_id(ev), **(headers or {})}
    return await js.publish(event_subject(ev), encoder.encode(ev), timeout=ACK_TIMEOUT_S, headers=hdrs)


async def publish_all(js: JetStreamContext, events: Iterable[Event], commands: Iterable[JobCommand] = ()) -> None:
    """Publish many messages pipelined (not one round trip each) and wait for every ack."""
    futures = []
    for ev in events:
        futures.append(
            await js.publish_async(event_subject(ev), encoder.encode(ev), headers={MSG_ID: event_msg_id(ev)})
        )
    for cmd in commands:
        subject = subjects.job_command(cmd.id, cmd.block, cmd.job)
        futures.append(await js.publish_async(subject, encoder.encode(cmd), headers={MSG_ID: subject}))
    if futures:
        await asyncio.wait_for(asyncio.gather(*futures), timeout=ACK_TIMEOUT_S * 2)


async def last_event(js: JetStreamContext, subject: str) -> RawStreamMsg | None:
    """The last message stored on one event subject, or None."""
    try:
        return await js.get_last_msg(EVENTS_STREAM, subject, direct=True)
    except nats.js.errors.NotFoundError:
        return None


async def stored_verdict(js: JetStreamContext, wf_id: str) -> RawStreamMsg | None:
    """The workflow's stored verdict event (`approved`, else `rejected`), or None while pending.
    Both subjects are read at once: one round trip."""
    approved, rejected = await asyncio.gather(
        *(last_event(js, subjects.event(wf_id, verdict)) for verdict in ("approved", "rejected"))
    )
    return approved or rejected


FOLLOW_YIELD_EVERY = 16  # a follower that reads a long backlog lets other tasks run this often
FOLLOW_BUFFER = 1024  # messages delivered and not yet read, at most: then the server waits (flow control)


class Follower:
    """An ordered consumer over one workflow's events: its whole history, then live events, read one
    at a time. A message already delivered is taken at once (nats-py's `next_msg` makes a task, a
    uuid and a timer per message, even one waiting: the executor reads every event of a workflow
    through this); every FOLLOW_YIELD_EVERY messages it yields to the event loop, so a long backlog
    never starves other tasks (lease renewals). At most FOLLOW_BUFFER messages wait here: past it the
    delivery callback waits for room, so nats-py holds back its flow-control replies and the server
    stops sending (a 100,000-job workflow's history is not read into memory at once). A message
    whose `metadata.num_pending` is 0 was the last one stored when it was delivered."""

    def __init__(self) -> None:
        self.sub: JetStreamContext.PushSubscription | None = None
        self._ready: deque[Msg] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._taken = 0

    async def _on_msg(self, msg: Msg) -> None:
        self._ready.append(msg)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if len(self._ready) >= FOLLOW_BUFFER:
            self._room.clear()
            await self._room.wait()

    @property
    def pending(self) -> int:
        """Messages delivered and not yet read (here, or still in nats-py's queue)."""
        return len(self._ready) + (self.sub.pending_msgs if self.sub is not None else 0)

    async def next(self, timeout: float) -> Msg | None:
        """The next message, or None when none came within `timeout` seconds."""
        if not self._ready:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                return None
            finally:
                self._waiter = None
        self._taken += 1
        if self._taken % FOLLOW_YIELD_EVERY == 0:
            await asyncio.sleep(0)
        msg = self._ready.popleft()
        if not self._room.is_set() and len(self._ready) < FOLLOW_BUFFER // 2:
            self._room.set()
        return msg

    async def stop(self) -> None:
        self._room.set()  # a delivery waiting for room ends
        if self.sub is not None:
            await self.sub.unsubscribe()


async def follow_workflow(js: JetStreamContext, wf_id: str) -> Follower:
    """A Follower of one workflow's events (unsubscribe with `stop()`)."""
    follower = Follower()
    follower.sub = await js.subscribe(subjects.workflow_events(wf_id), stream=EVENTS_STREAM, cb=follower._on_msg,
                                      ordered_consumer=True, idle_heartbeat=2.0)
    return follower


async def read_history(js: JetStreamContext, wf_id: str, timeout_s: float = 5.0) -> list[Msg]:
    """Every event stored for one workflow, in stream order. Call only for a workflow that exists."""
    follower = await follow_workflow(js, wf_id)
    msgs: list[Msg] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                msg = await follower.next(timeout_s)
                if msg is None:
                    raise TimeoutError
                msgs.append(msg)
                if msg.metadata.num_pending == 0:
                    return msgs
    finally:
        await follower.stop()


async def kv_updates(kv: KeyValue, stop: asyncio.Event, key: str | None = None) -> AsyncIterator[KeyValue.Entry | None]:
    """A KV watch (one key, or all) until stopped: current values, `None` once caught up, then every
    update as it happens. Deletes come as entries whose `operation` is DEL or PURGE."""
    watcher = await (kv.watch(key) if key is not None else kv.watchall())
    try:
        while not stop.is_set():
            try:
                yield await watcher.updates(timeout=1.0)  # type: ignore[no-untyped-call]
            except TimeoutError:
                continue
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
