"""Connecting, publishing events and commands, and reading one workflow's history."""

from __future__ import annotations

import asyncio
import os
import ssl
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

from . import fastpath  # noqa: F401  (nats-py's hot paths, patched on import)
from .topology import EVENTS_STREAM, SERVICE_INBOXES

log = structlog.get_logger()
T = TypeVar("T")

ACK_TIMEOUT_S = 5.0
MSG_ID = "Nats-Msg-Id"
# JetStream's error codes for a failed `Nats-Expected-Last-Subject-Sequence` check
WRONG_LAST_SEQUENCE = frozenset({10071, 10164})


def wrong_last_sequence(exc: nats.js.errors.APIError) -> bool:
    """Whether a publish was refused because its expected-last-sequence check failed."""
    return exc.err_code in WRONG_LAST_SEQUENCE


def tls_context() -> ssl.SSLContext | None:
    """With `WF_NATS_CA` set (a CA file, or the server's self-signed certificate), TLS trusting it."""
    ca_file = os.environ.get("WF_NATS_CA")
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def server_urls(url: str) -> list[str]:
    """The servers of a `WF_NATS_URL`: one URL, or several comma-separated (a cluster)."""
    return [u.strip() for u in url.split(",")]


def jetstream(nc: Client) -> JetStreamContext:
    """The JetStream context every service builds in its main() (and passes down): the one place that
    chooses how JetStream calls are made."""
    return nc.jetstream()


async def connect(url: str, name: str, *, connect_deadline_s: float = 30.0) -> Client:
    """Connect, retrying until the deadline; once connected, reconnect forever (to any server of a
    cluster: `url` may list several, comma-separated, and the cluster announces the others)."""

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
                tls=tls_context(),
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


async def publish_event(js: JetStreamContext, ev: Event, headers: dict[str, str] | None = None) -> int:
    """Publish one event and wait for the stream's ack; returns its stream sequence."""
    hdrs = {MSG_ID: event_msg_id(ev), **(headers or {})}
    ack = await js.publish(event_subject(ev), encoder.encode(ev), timeout=ACK_TIMEOUT_S, headers=hdrs)
    return ack.seq


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


async def last_event(js: JetStreamContext, subject: str) -> Msg | None:
    """The last message stored on one event subject, or None."""
    try:
        raw = await js.get_last_msg(EVENTS_STREAM, subject, direct=True)
    except nats.js.errors.NotFoundError:
        return None
    return raw  # type: ignore[return-value]


async def stored_verdict(js: JetStreamContext, wf_id: str) -> Msg | None:
    """The workflow's stored verdict event (`approved`, else `rejected`), or None while pending.
    Both subjects are read at once: one round trip."""
    approved, rejected = await asyncio.gather(
        *(last_event(js, f"wf.evt.{wf_id}.{verdict}") for verdict in ("approved", "rejected"))
    )
    return approved or rejected


async def follow_workflow(js: JetStreamContext, wf_id: str) -> JetStreamContext.PushSubscription:
    """An ordered consumer over one workflow's events: its whole history, then live events.

    A message whose `metadata.num_pending` is 0 is the last one stored when it was delivered."""
    return await js.subscribe(f"wf.evt.{wf_id}.>", stream=EVENTS_STREAM, ordered_consumer=True, idle_heartbeat=2.0)


async def read_history(js: JetStreamContext, wf_id: str, timeout_s: float = 5.0) -> list[Msg]:
    """Every event stored for one workflow, in stream order. Call only for a workflow that exists."""
    sub = await follow_workflow(js, wf_id)
    msgs: list[Msg] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                msg = await sub.next_msg(timeout=timeout_s)
                msgs.append(msg)
                if msg.metadata.num_pending == 0:
                    return msgs
    finally:
        await sub.unsubscribe()


async def kv_updates(kv: KeyValue, stop: asyncio.Event, key: str | None = None) -> AsyncIterator[KeyValue.Entry | None]:
    """A KV watch (one key, or all) until stopped: current values, `None` once caught up, then every
    update as it happens. Deletes come as entries whose `operation` is DEL or PURGE."""
    watcher = await (kv.watch(key) if key is not None else kv.watchall())
    try:
        while not stop.is_set():
            try:
                yield await watcher.updates(timeout=1.0)
            except TimeoutError:
                continue
    finally:
        await watcher.stop()
