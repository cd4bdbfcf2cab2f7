"""Reading a durable pull consumer: one pull request open at a time, messages handed over as they arrive.

Every service that consumes a durable (wf-policy, wf-executor, wf-status, the runners) reads it
through `ConsumerReader`, not nats-py's `PullSubscription.fetch`, which shares one inbox between its
pull requests and can take one request's expiry notice for another's answer, leaving a message
waiting in a forgotten request (the defect, how it was found and measured: docs/performance.md,
"Pulling from the durable consumers"; reproduced by tests/integration/test_consumer_reader.py).

- One request at a time, each on its own reply subject, so an expiry notice (408) ends only the
  request it names, and the credit the request still holds is counted exactly.
- `take(n, timeout)` returns whatever has arrived as soon as anything has; the request stays open
  after it, and what it delivers later waits here for the next `take`.
- Each request asks for idle heartbeats (HEARTBEAT_FRACTION of its expiry, at most HEARTBEAT_MAX_S):
  a request that has delivered nothing, not even a heartbeat, for three of them is taken as lost (the
  server restarted, the connection was replaced) and a new one is made at once, instead of waiting
  for the request's expiry.
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

from schemas import subjects

log = structlog.get_logger()
ENDED = (StatusCode.NO_MESSAGES, StatusCode.REQUEST_TIMEOUT)  # the usual end of a request, not a refusal
GRACE_S = 0.5  # a request not ended by the server this long after its expiry is taken as lost
HEARTBEAT_FRACTION = 0.25  # of a request's expiry: the server's idle heartbeat (it refuses one over half)
HEARTBEAT_MAX_S = 1.0
HEARTBEAT_MIN_S = 0.1  # a request shorter than 4 of these asks for none
HEARTBEATS_MISSED = 3  # a request silent this many heartbeats is taken as lost
BACKOFF_S = 0.5  # after the server refused a request (consumer deleted, too many waiting, ...)


class ConsumerReader:
    """One pull request at a time for one durable consumer, its replies on their own subject.

    One at a time keeps the count exact: a message carries its own subject, not its request's, so
    with several requests open it could not be told which of them it used up, and a request whose
    batch is used up ends without a word from the server."""

    def __init__(self, nc: Client, stream: str, durable: str) -> None:
        self.nc = nc
        self.stream = stream
        self.durable = durable
        self._next_subject = subjects.js_api("CONSUMER", "MSG", "NEXT", stream, durable)
        self._prefix = nc.new_inbox() + "."
        self._sub: Subscription | None = None
        self._buffer: deque[Msg] = deque()
        self._waiter: asyncio.Future[None] | None = None  # a take waiting for the next message
        self._wake_at = 1  # ... or for this many buffered (settling: the rest of its batch)
        self._counter = 0
        self._open = ""  # the open request's reply subject, "" when none
        self._credit = 0  # the messages it may still deliver
        self._give_up = 0.0  # when it is taken as lost if the server has not ended it
        self._heartbeat_s = 0.0  # the open request's idle heartbeat (0: none)
        self._heard_at = 0.0  # when it last delivered anything, heartbeats included
        self._waiting_since = 0.0  # when the take now running began
        self._paused_until = 0.0

    async def subscribe(self) -> None:
        self._sub = await self.nc.subscribe(self._prefix + "*", cb=self._on_msg)

    async def unsubscribe(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        self._heard_at = time.monotonic()  # (a stale request's notice too: at worst a later "lost")
        self._buffer.append(msg)
        if len(self._buffer) >= self._wake_at:
            _wake(self._waiter)

    async def _request(self, batch: int, expires_s: float, now: float) -> None:
        self._counter += 1
        self._open, self._credit = f"{self._prefix}{self._counter}", batch
        self._give_up = now + expires_s + GRACE_S
        self._heard_at = now
        heartbeat_s = min(HEARTBEAT_MAX_S, expires_s * HEARTBEAT_FRACTION)
        self._heartbeat_s = heartbeat_s if heartbeat_s >= HEARTBEAT_MIN_S else 0.0
        request: dict[str, int] = {"batch": batch, "expires": int(expires_s * 1e9)}
        if self._heartbeat_s:
            request["idle_heartbeat"] = int(self._heartbeat_s * 1e9)
        body = json.dumps(request).encode()
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
        self._waiting_since = deadline - timeout  # silence counts only while a take waits (not while
        # the service is busy elsewhere: the heartbeats then wait unread on the socket)
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
                if self._open and self._lost(now):
                    for _ in range(3):  # heartbeats received but not yet handed over: let them in
                        await asyncio.sleep(0)
                    if self._buffer:
                        continue
                    # (a restarted server forgot it): its messages are redelivered after their ack wait
                    log.info("pull_request_lost", consumer=self.durable)
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
                elif self._heartbeat_s:
                    heard = max(self._heard_at, self._waiting_since)
                    until = min(until, heard + HEARTBEATS_MISSED * self._heartbeat_s + 0.01)
            # a future and a timer rather than wait_for, which makes a task per call
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(until - now, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter, self._wake_at = None, 1

    def _lost(self, now: float) -> bool:
        """Whether the open request is gone: past its expiry and grace with no notice, or silent (no
        message, no heartbeat) for HEARTBEATS_MISSED heartbeats."""
        heard = max(self._heard_at, self._waiting_since)
        return now > self._give_up or (self._heartbeat_s > 0 and now > heard + HEARTBEATS_MISSED * self._heartbeat_s)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
