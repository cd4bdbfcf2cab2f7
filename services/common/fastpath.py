"""Five of nats-py's hot paths, made cheaper on import (services/common/bus.py imports this module).

Each keeps the library's behaviour (the same results, the same exceptions) and stands aside, leaving
nats-py's own, for a version whose method takes other parameters or (for the two that copy private
code) whose source differs from the one it was written for. Measured: docs/performance.md."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio import client as nats_client
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext
from nats.protocol import command as prot_command

FAST_YIELD_EVERY = 16


def _takes(func: Any, *params: str) -> bool:
    """Whether nats-py's `func` takes exactly these parameters: a replacement written for them stands
    aside for a version that takes others (its callers inside nats-py might pass them)."""
    try:
        return tuple(inspect.signature(func).parameters) == params
    except (TypeError, ValueError):
        return False


def _next_msg_fast_path() -> None:
    """nats-py's `Subscription.next_msg` makes a task, a uuid and a timer for every message, even one
    already waiting; the executor's workflow follows and `read_history` go through it (the pull
consumers no longer do: services/common/pull.py). With a
    message waiting, take it at once (the same bookkeeping), yielding to the event loop every
    FAST_YIELD_EVERY messages as the original does on each (a long backlog must not starve other
    tasks, such as lease renewals); otherwise wait as before."""
    from nats.aio import subscription
    from nats.errors import ConnectionClosedError

    cls = subscription.Subscription
    original = cls.next_msg
    if getattr(original, "_wf_fast", False) or not _takes(original, "self", "timeout"):
        return
    taken = 0

    async def next_msg(self: subscription.Subscription, timeout: float | None = 1.0) -> Msg:
        nonlocal taken
        queue = getattr(self, "_pending_queue", None)
        if isinstance(queue, asyncio.Queue) and not self._cb and not queue.empty():
            if self._conn.is_closed:
                raise ConnectionClosedError
            taken += 1
            if taken % FAST_YIELD_EVERY == 0:
                await asyncio.sleep(0)
                if queue.empty():  # taken meanwhile by another reader: wait as usual
                    return await original(self, timeout)
            msg = queue.get_nowait()
            self._pending_size -= len(msg.data)
            queue.task_done()
            return msg
        return await original(self, timeout)

    next_msg._wf_fast = True  # type: ignore[attr-defined]
    cls.next_msg = next_msg  # type: ignore[method-assign]


class _PubAck(msgspec.Struct):
    """A JetStream publish's reply: the stored message's place, or an error."""

    stream: str = ""
    seq: int = 0
    domain: str | None = None
    duplicate: bool | None = None
    error: dict[str, Any] | None = None


_pub_ack_decoder = msgspec.json.Decoder(_PubAck)
NO_RESPONDERS = "503"


SWEEP_S = 0.05  # how often waiting requests are checked for their timeout (so it can be this late)


class Replies:
    """The replies to one connection's requests, all on one wildcard subscription; each request
    waits on a future found by a counter in its reply subject. Timeouts are checked every SWEEP_S
    (a timer per request cost more than the rest of the wait), oldest first per timeout value."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox() + "."
        self.waiting: dict[str, asyncio.Future[Msg]] = {}
        self.deadlines: dict[float, deque[tuple[float, str]]] = {}  # by timeout: (deadline, token), in order
        self.count = 0
        self.subscribed: asyncio.Future[Any] | None = None
        self.sweeper: asyncio.TimerHandle | None = None

    async def _on_reply(self, msg: Msg) -> None:
        fut = self.waiting.pop(msg.subject[len(self.prefix):], None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def request(self, subject: str, payload: bytes, headers: dict[str, Any] | None, timeout: float | None) -> Msg:
        if self.subscribed is None or (self.subscribed.done() and (self.subscribed.cancelled()
                                                                  or self.subscribed.exception() is not None)):
            self.subscribed = asyncio.ensure_future(self.nc.subscribe(self.prefix + "*", cb=self._on_reply))
        if not self.subscribed.done():
            await asyncio.shield(self.subscribed)  # its SUB is queued before any PUB: no reply is missed
        self.subscribed.result()  # raises if subscribing failed (the next request tries again)
        self.count += 1
        token = str(self.count)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Msg] = loop.create_future()
        self.waiting[token] = fut
        if timeout is not None:  # None waits as long as it takes, as with nats-py's own
            queue = self.deadlines.get(timeout)
            if queue is None:
                queue = self.deadlines[timeout] = deque()
            queue.append((loop.time() + timeout, token))
            if self.sweeper is None:
                self.sweeper = loop.call_later(SWEEP_S, self._sweep)
        try:
            await self.nc.publish(subject, payload, reply=self.prefix + token, headers=headers)
            return await fut
        finally:
            self.waiting.pop(token, None)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for timeout, queue in list(self.deadlines.items()):
            while queue and (queue[0][0] <= now or queue[0][1] not in self.waiting):
                fut = self.waiting.pop(queue.popleft()[1], None)
                if fut is not None and not fut.done():
                    fut.set_exception(nats.errors.TimeoutError())
            if not queue:
                del self.deadlines[timeout]
        self.sweeper = loop.call_later(SWEEP_S, self._sweep) if self.deadlines else None


def _request_fast_path() -> None:
    """nats-py's `Client.request` (under every JetStream, KV and micro call as well) pays for a NUID
    reply token and `asyncio.wait_for` on each request. This one keeps its own reply subscription per
    connection (as nats-py does), with a counter for token and one timer; the reply and the
    exceptions (TimeoutError, NoRespondersError) are the original's."""
    cls = Client
    original = cls.request
    if getattr(original, "_wf_fast", False) or not _takes(
            original, "self", "subject", "payload", "timeout", "old_style", "headers"):
        return

    async def request(
        self: Client, subject: str, payload: bytes = b"", timeout: float = 0.5, old_style: bool = False,
        headers: dict[str, Any] | None = None,
    ) -> Msg:
        if old_style:
            return await original(self, subject, payload, timeout=timeout, old_style=True, headers=headers)
        replies = self.__dict__.get("_wf_replies")
        if replies is None:
            replies = self.__dict__["_wf_replies"] = Replies(self)
        msg = await replies.request(subject, payload, headers, timeout)
        if msg.headers and msg.headers.get(api.Header.STATUS) == NO_RESPONDERS:
            raise nats.errors.NoRespondersError
        return msg

    request._wf_fast = True  # type: ignore[attr-defined]
    cls.request = request  # type: ignore[method-assign]


def _js_publish_fast_path() -> None:
    """nats-py's `JetStreamContext.publish` (which KV puts, creates and updates use too) decodes each
    ack with `json.loads` and a dataclass filter; this one with msgspec. Same result, same exceptions."""
    cls = JetStreamContext
    original = cls.publish
    if getattr(original, "_wf_fast", False) or not _takes(
            original, "self", "subject", "payload", "timeout", "stream", "headers", "msg_ttl"):
        return

    async def publish(
        self: JetStreamContext, subject: str, payload: bytes = b"", timeout: float | None = None,
        stream: str | None = None, headers: dict[str, Any] | None = None, msg_ttl: float | None = None,
    ) -> api.PubAck:
        nc = getattr(self, "_nc", None)
        if stream is not None or msg_ttl is not None or not isinstance(nc, Client):
            return await original(self, subject, payload, timeout=timeout, stream=stream, headers=headers,
                                  msg_ttl=msg_ttl)
        try:
            msg = await nc.request(subject, payload, timeout=self._timeout if timeout is None else timeout,
                                   headers=headers)
        except nats.errors.NoRespondersError:
            raise nats.js.errors.NoStreamResponseError from None
        ack = _pub_ack_decoder.decode(msg.data)
        if ack.error is not None:
            nats.js.errors.APIError.from_error(ack.error)  # raises the error's own class
        return api.PubAck(stream=ack.stream, seq=ack.seq, domain=ack.domain, duplicate=ack.duplicate)

    publish._wf_fast = True  # type: ignore[attr-defined]
    cls.publish = publish  # type: ignore[method-assign]


_ASCII_SPACE = re.compile(r"[\t\n\x0b\x0c\r\x1c-\x1f ]")  # the ASCII characters str.isspace() accepts
_BYTES_STRIP = " \t\n\r\x0b\x0c"  # the characters bytes.strip() removes


def _fast_header_lines(original: Callable[[bytes], dict[str, str]]) -> Callable[[bytes], dict[str, str]]:
    """nats-py's `Client._parse_header_lines`, for an all-ASCII block (any other goes to the original):
    the block decoded once rather than each name and value, and a name searched for whitespace only
    when it holds a space or a control character, rather than a generator over every name's
    characters. The same result (tests/unit/test_fastpath.py)."""

    def parse(raw: bytes) -> dict[str, str]:
        if not raw.isascii():
            return original(raw)
        out: dict[str, str] = {}
        for line in raw.decode("ascii").split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                continue
            key = name.strip(_BYTES_STRIP)
            if (" " in key or not key.isprintable()) and _ASCII_SPACE.search(key):
                continue
            out[key] = value.strip(_BYTES_STRIP)
        return out

    return parse


def _written_for(func: Any, digest: str) -> bool:
    """Whether nats-py's `func` is, to the character, the one a fast path below was written for (a
    fast path that copies private behaviour stands aside for any other version of it)."""
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    return hashlib.sha256(source.encode()).hexdigest()[:16] == digest


_HEADER_NAMES: dict[str, bytes] = {}  # header names already checked, encoded with their ": "
_HEADER_NAMES_MAX = 1024


def _encode_headers(headers: dict[str, Any]) -> bytes:
    """The header block nats-py's `_send_publish` builds (the same bytes and the same BadHeaderError),
    checking each distinct name once and translating a value only when it holds a CR or LF."""
    parts = [b"NATS/1.0\r\n"]
    for k, v in headers.items():
        name = _HEADER_NAMES.get(k)
        if name is None:
            key = k.strip()
            if not key:
                continue  # skipped, as nats-py does
            if not nats_client._HEADER_KEY_RE.fullmatch(key):
                raise nats.errors.BadHeaderError(key)
            name = key.encode() + b": "
            if len(_HEADER_NAMES) < _HEADER_NAMES_MAX:
                _HEADER_NAMES[k] = name
        value = v.strip()
        if "\r" in value or "\n" in value:
            value = value.translate(nats_client._HEADER_VALUE_NEWLINES)
        parts.append(name + value.encode() + b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _header_encode_fast_path() -> None:
    """Every publish with headers (each event's Nats-Msg-Id, each KV write's expected revision)
    went through a regular expression, a `str.translate` and five buffer extends per header: 6 us
    for two. `_send_publish` is otherwise nats-py 2.16's, line for line."""
    original = Client._send_publish
    if getattr(original, "_wf_fast", False) or not _written_for(original, "300b534f8eabee74"):
        return

    async def _send_publish(
        self: Client, subject: str, reply: str, payload: bytes, payload_size: int, headers: dict[str, Any] | None,
    ) -> None:
        if subject == "":
            raise nats.errors.BadSubjectError
        if headers is None:
            pub_cmd = prot_command.pub_cmd(subject, reply, payload)
        else:
            pub_cmd = prot_command.hpub_cmd(subject, reply, _encode_headers(headers), payload)
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(pub_cmd)
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    _send_publish._wf_fast = True  # type: ignore[attr-defined]
    _send_publish._wf_original = original  # type: ignore[attr-defined]
    Client._send_publish = _send_publish  # type: ignore[method-assign]


def _header_parse_fast_path() -> None:
    """Every message with headers goes through `Client._parse_header_lines`: each JetStream event
    (its Nats-Msg-Id), each request from `wf submit`, each status of a pull request."""
    original = Client.__dict__.get("_parse_header_lines")
    if (not isinstance(original, staticmethod) or getattr(original.__func__, "_wf_fast", False)
            or not _written_for(original.__func__, "049cf69148e0bb4f")):
        return
    parse = _fast_header_lines(original.__func__)
    parse._wf_fast = True  # type: ignore[attr-defined]
    parse._wf_original = original.__func__  # type: ignore[attr-defined]
    Client._parse_header_lines = staticmethod(parse)  # type: ignore[method-assign]


_next_msg_fast_path()
_request_fast_path()
_js_publish_fast_path()
_header_parse_fast_path()
_header_encode_fast_path()
