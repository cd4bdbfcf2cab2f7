"""Messages from a durable pull consumer, handed over as soon as they arrive.

nats-py's `PullSubscription.fetch` shares one inbox between all its pull requests. When a fetch
times out on an idle consumer just before the server's expiry notice (408) for its request
arrives, the next fetch takes that notice for the answer to its own first request, sends a
second one, returns with what the first brought, and leaves the second open. The next message
goes to that forgotten request, and the fetch then running waits for the rest of its batch until
another message comes or the request expires (measured: two submits 5 ms apart, the second's
verdict 0.7 s late in 7 of 40 pairs; in `tests/integration/test_pull.py`'s loop, a message
0.3-0.4 s late in every run). `Puller` keeps one request at a time, each with its own reply
subject, counts the credit it still holds, and `take` returns whatever has arrived the moment
anything has. The request stays open after a `take`; what it delivers later waits in memory for
the next one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import Header, StatusCode

log = structlog.get_logger()
ENDED = (StatusCode.NO_MESSAGES, StatusCode.REQUEST_TIMEOUT)  # the usual end of a request, not a refusal
GRACE_S = 0.5  # a request not ended by the server this long after its expiry is taken as lost
BACKOFF_S = 0.5  # after the server refused a request (consumer deleted, too many waiting, ...)


class Puller:
    """One pull request at a time for one durable consumer, its replies on their own subject.

    One at a time keeps the count exact: a message carries its own subject, not its request's, so
    with several requests open it could not be told which of them it used up, and a request whose
    batch is used up ends without a word from the server."""

    def __init__(self, nc: Client, stream: str, durable: str, *, api_prefix: str = "$JS.API") -> None:
        self.nc = nc
        self.stream = stream
        self.durable = durable
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._prefix = nc.new_inbox() + "."
        self._sub: Subscription | None = None
        self._buffer: deque[Msg] = deque()
        self._waiter: asyncio.Future[None] | None = None  # a take waiting for the next message
        self._wake_at = 1  # ... or for this many buffered (settling: the rest of its batch)
        self._counter = 0
        self._open = ""  # the open request's reply subject, "" when none
        self._credit = 0  # the messages it may still deliver
        self._give_up = 0.0  # when it is taken as lost if the server has not ended it
        self._paused_until = 0.0

    async def subscribe(self) -> None:
        self._sub = await self.nc.subscribe(self._prefix + "*", cb=self._on_msg)

    async def unsubscribe(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        self._buffer.append(msg)
        if len(self._buffer) >= self._wake_at:
            _wake(self._waiter)

    async def _request(self, batch: int, expires_s: float, now: float) -> None:
        self._counter += 1
        self._open, self._credit = f"{self._prefix}{self._counter}", batch
        self._give_up = now + expires_s + GRACE_S
        body = json.dumps({"batch": batch, "expires": int(expires_s * 1e9)}).encode()
        try:
            await self.nc.publish(self._next_subject, body, reply=self._open)
        except BaseException:
            self._open = ""
            raise

    def _drain(self) -> list[Msg]:
        """The buffered messages, with the open request's credit counted down and statuses applied."""
        msgs: list[Msg] = []
        while self._buffer:
            msg = self._buffer.popleft()
            status = msg.headers.get(Header.STATUS) if msg.headers and not msg.reply else None
            if status is None:
                msgs.append(msg)
                self._credit -= 1
                if self._credit <= 0:
                    self._open = ""
            elif status != StatusCode.CONTROL_MESSAGE and msg.subject == self._open:
                # 408 expired, 409 refused ...: that request is over (a stale one's notice is not)
                self._open = ""
                if status not in ENDED:
                    log.warning("pull_request_refused", consumer=self.durable, status=status,
                                description=(msg.headers or {}).get(Header.DESCRIPTION, ""))
                    self._paused_until = time.monotonic() + BACKOFF_S
        return msgs

    async def take(self, want: int, timeout: float = 1.0, settle_s: float = 0.0) -> list[Msg]:
        """The messages that arrived, at least one, waiting up to `timeout` for the first; [] if none.
        With no request open, first asks for `want` (the request expires after `timeout`). With
        `settle_s`, once the first has come, waits up to that long for the rest of the `want`
        (while the request may still bring them): fuller batches for a consumer off the request
        path, and none of the wait when they are there already, as under load."""
        deadline = time.monotonic() + timeout
        msgs: list[Msg] = []
        settled_at = 0.0
        while True:
            msgs += self._drain()
            now = time.monotonic()
            if msgs:
                if settle_s <= 0 or len(msgs) >= want or not self._open:
                    return msgs
                settled_at = settled_at or now + settle_s
                if now >= settled_at:
                    return msgs
                until, self._wake_at = settled_at, want - len(msgs)
            else:
                if now >= deadline:
                    return []
                if self._open and now > self._give_up:  # lost (a reconnect): its messages are redelivered
                    self._open = ""
                if not self._open and now >= self._paused_until:
                    try:
                        await self._request(want, timeout, now)
                    except nats.errors.Error as exc:  # disconnected: try again after a pause
                        log.warning("pull_request_failed", consumer=self.durable, error=repr(exc))
                        self._paused_until = now + BACKOFF_S
                until, self._wake_at = deadline, 1
                if not self._open:
                    until = min(until, max(now, self._paused_until))
            # a future and a timer rather than wait_for, which makes a task per call
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(until - now, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter, self._wake_at = None, 1


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
