"""Requests and JetStream calls made cheaper, by code of ours that every service builds in its main().

nats-py's `Client.request` makes a NUID reply token, an `asyncio.wait_for` (a task) and a timer for
each request, and `JetStreamContext.publish` decodes each ack with `json.loads` and a dataclass
filter. Every event a service publishes, every KV write and read, and every last-event look-up is a
request, so those costs were a quarter of the CPU of a submit (docs/performance.md). Two classes
replace them, using only nats-py's public API (`subscribe`, `publish`, `new_inbox`, and subclassing
`JetStreamContext`); nothing of nats-py is replaced:

- `Requester`: one reply subscription per connection, a counter for token, one timer sweeping the
  timeouts every SWEEP_S. The same replies and exceptions (`TimeoutError`, `NoRespondersError`) as
  `Client.request`; a timeout fires up to SWEEP_S late.
- `JetStream`: a `JetStreamContext` whose `publish` (events, commands, and every KV put, create,
  update and delete, as nats-py's `KeyValue` calls its context's `publish`) and whose direct
  last-by-subject `get_msg` (`last_event`, every KV get) go through the Requester; acks are decoded
  by msgspec. The same results and exceptions as the library's own. Everything else is the library's.

`bus.jetstream(nc)` builds both; tests/integration/test_requester.py checks them against a real
server and fails (never skips) if nats-py's `KeyValue` stops going through its context's methods.
"""

from __future__ import annotations

import asyncio
import datetime
from collections import deque
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api
from nats.js.client import JetStreamContext

from schemas import subjects

SWEEP_S = 0.05  # how often waiting requests are checked for their timeout (so it can be this late)
NO_RESPONDERS = "503"
NOT_FOUND = "404"


class Requester:
    """The replies to one connection's requests, all on one wildcard subscription; each request
    waits on a future found by a counter in its reply subject. Timeouts are checked every SWEEP_S
    (a timer per request cost more than the rest of the wait), oldest first per timeout value."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox() + "."
        self.waiting: dict[str, asyncio.Future[Msg]] = {}
        self.deadlines: dict[float, deque[tuple[float, str]]] = {}  # by timeout: (deadline, token), in order
        self.count = 0
        self.subscribed: asyncio.Future[Subscription] | None = None
        self.sweeper: asyncio.TimerHandle | None = None

    async def _on_reply(self, msg: Msg) -> None:
        fut = self.waiting.pop(msg.subject[len(self.prefix):], None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def _subscribe(self) -> None:
        subscribed = self.subscribed
        if subscribed is None or (subscribed.done() and (subscribed.cancelled() or subscribed.exception() is not None)):
            subscribed = self.subscribed = asyncio.ensure_future(self.nc.subscribe(self.prefix + "*", cb=self._on_reply))
        if not subscribed.done():
            await asyncio.shield(subscribed)  # its SUB is queued before any PUB: no reply is missed
        subscribed.result()  # raises if subscribing failed (the next request tries again)

    async def request(
        self, subject: str, payload: bytes = b"", timeout: float | None = 0.5, headers: dict[str, str] | None = None,
    ) -> Msg:
        """`Client.request`'s reply, or its exceptions; `timeout=None` waits as long as it takes."""
        subscribed = self.subscribed
        if (subscribed is None or not subscribed.done() or subscribed.cancelled()
                or subscribed.exception() is not None):
            await self._subscribe()
        self.count += 1
        token = str(self.count)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Msg] = loop.create_future()
        self.waiting[token] = fut
        if timeout is not None:
            queue = self.deadlines.get(timeout)
            if queue is None:
                queue = self.deadlines[timeout] = deque()
            queue.append((loop.time() + timeout, token))
            if self.sweeper is None:
                self.sweeper = loop.call_later(SWEEP_S, self._sweep)
        try:
            await self.nc.publish(subject, payload, reply=self.prefix + token, headers=headers)
            msg = await fut
        finally:
            self.waiting.pop(token, None)
        if msg.headers and msg.headers.get(api.Header.STATUS) == NO_RESPONDERS:
            raise nats.errors.NoRespondersError
        return msg

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


class _PubAck(msgspec.Struct):
    """A JetStream publish's reply: the stored message's place, or an error."""

    stream: str = ""
    seq: int = 0
    domain: str | None = None
    duplicate: bool | None = None
    error: dict[str, Any] | None = None


_pub_ack_decoder = msgspec.json.Decoder(_PubAck)


class JetStream(JetStreamContext):
    """nats-py's JetStream context, with `publish` and direct last-by-subject `get_msg` made through
    a Requester (see the module's docstring). Built by `bus.jetstream(nc)`."""

    def __init__(self, nc: Client, requester: Requester, *, timeout: float = 5.0) -> None:
        super().__init__(nc, timeout=timeout)
        self.requester = requester
        self.default_timeout = timeout

    async def publish(
        self, subject: str, payload: bytes = b"", timeout: float | None = None, stream: str | None = None,
        headers: dict[str, Any] | None = None, msg_ttl: float | None = None,
    ) -> api.PubAck:
        if stream is not None or msg_ttl is not None:  # the headers the library's own adds for these
            headers = dict(headers or {})
            if stream is not None:
                headers[api.Header.EXPECTED_STREAM] = stream
            if msg_ttl is not None:
                headers[api.Header.MSG_TTL] = str(int(msg_ttl))
        try:
            msg = await self.requester.request(subject, payload, self.default_timeout if timeout is None else timeout,
                                               headers)
        except nats.errors.NoRespondersError:
            raise nats.js.errors.NoStreamResponseError from None
        ack = _pub_ack_decoder.decode(msg.data)
        if ack.error is not None:
            nats.js.errors.APIError.from_error(ack.error)  # raises the error's own class
        return api.PubAck(stream=ack.stream, seq=ack.seq, domain=ack.domain, duplicate=ack.duplicate)

    async def get_msg(
        self, stream_name: str, seq: int | None = None, subject: str | None = None, direct: bool | None = False,
        next: bool | None = False,  # noqa: A002  (the library's parameter name)
    ) -> api.RawStreamMsg:
        if not (direct and subject and seq is None and not next):
            return await super().get_msg(stream_name, seq=seq, subject=subject, direct=direct, next=next)
        msg = await self.requester.request(subjects.js_api("DIRECT", "GET", stream_name, subject), b"",
                                           self.default_timeout)
        headers = msg.headers or {}
        if not msg.data and (status := headers.get(api.Header.STATUS)):
            if status == NOT_FOUND:
                raise nats.js.errors.NotFoundError
            nats.js.errors.APIError.from_msg(msg)  # raises the status's own class
        seq_header = headers.get("Nats-Sequence")
        stamp = headers.get("Nats-Time-Stamp")
        return api.RawStreamMsg(subject=headers["Nats-Subject"], seq=int(seq_header) if seq_header else None,
                                data=msg.data or None, headers=msg.headers, time=utc_time(stamp) if stamp else None)


def utc_time(stamp: str) -> datetime.datetime:
    """A `Nats-Time-Stamp` (RFC 3339, nanoseconds, `Z`) as an aware datetime, to the microsecond."""
    whole, _, rest = stamp.rstrip("Z").partition(".")
    fraction = rest[:6].ljust(6, "0") if rest else "000000"
    return datetime.datetime.fromisoformat(f"{whole}.{fraction}+00:00")
