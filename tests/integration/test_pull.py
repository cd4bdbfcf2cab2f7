"""services/common/pull.py against a real nats-server: a consumer gets each message when it arrives
(not when a batch fills or a pull request expires), never more than it asked for, and nothing is
lost; a consumer that disappears is reported and not hammered with requests."""

import asyncio
import random
import time
from collections.abc import AsyncIterator

import nats
import pytest
import structlog.testing
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from services.common.pull import Puller
from tests.conftest import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    conn = await nats.connect(nats_server)
    js = conn.jetstream()
    await js.add_stream(StreamConfig(name="P", subjects=["p.>"]))
    # like wf-policy's: filtered, so other subjects' messages lie between the ones it gets
    await js.add_consumer("P", ConsumerConfig(durable_name="c", filter_subject="p.*.in", ack_policy=AckPolicy.EXPLICIT,
                                              ack_wait=30, max_ack_pending=1000))
    yield conn
    await conn.close()


TAKE_S = 0.5  # each take's request expires after this; a message left behind waits up to it
PAIRS = 25


async def test_each_message_is_handed_over_when_it_arrives(nc: Client) -> None:
    """The loop of wf-policy (take 64, handle, publish an answer, ack, take again), idle between
    pairs of messages 5 ms apart, so its requests expire and are renewed all along. nats-py's fetch
    in this loop mistook the expiry notice of its last request for the answer to its next one and
    left a request open that it no longer read: 10-20 % of messages were handed over only when the
    next one came or that request expired (up to the whole timeout); healthy hand-overs take
    milliseconds."""
    js = nc.jetstream()
    puller = Puller(nc, "P", "c")
    await puller.subscribe()
    sent: dict[bytes, float] = {}
    waited: dict[bytes, float] = {}
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            for msg in await puller.take(64, timeout=TAKE_S):
                waited[msg.data] = time.monotonic() - sent[msg.data]
                await js.publish(f"p.{msg.data.decode()}.out", b"answer")
                await msg.ack()

    consumer = asyncio.create_task(consume())
    rng = random.Random(7)
    for pair in range(PAIRS):
        await asyncio.sleep(rng.uniform(0.1, 1.0))  # idle a while: a random moment in a request's life
        for second in (False, True):
            if second:
                await asyncio.sleep(0.005)
            key = f"{pair}-{int(second)}".encode()
            sent[key] = time.monotonic()
            await js.publish(f"p.{key.decode()}.in", key)
    async def all_handed_over() -> bool:
        return len(waited) == 2 * PAIRS

    await eventually(all_handed_over, timeout_s=30, what="every message handed over")
    stop.set()
    await consumer
    slowest = max(waited.values())
    assert slowest < TAKE_S / 2, f"a message waited {slowest:.2f} s after it arrived"


async def test_never_more_than_asked_for_in_order_and_nothing_lost(nc: Client) -> None:
    js = nc.jetstream()
    for i in range(25):
        await js.publish(f"p.{i}.in", str(i).encode())
    puller = Puller(nc, "P", "c")
    await puller.subscribe()
    got: list[int] = []
    while len(got) < 25:
        batch = await puller.take(3, timeout=5.0)
        assert 0 < len(batch) <= 3
        for msg in batch:
            got.append(int(msg.data))
            await msg.ack()
    assert got == list(range(25))
    assert await puller.take(3, timeout=0.3) == []  # all acked: nothing comes again


async def test_after_an_idle_expiry_the_next_message_still_comes(nc: Client) -> None:
    puller = Puller(nc, "P", "c")
    await puller.subscribe()
    assert await puller.take(5, timeout=0.2) == []  # its request expires on the server
    await nc.jetstream().publish("p.late.in", b"late")  # after the expiry
    started = time.monotonic()
    [msg] = await puller.take(5, timeout=5.0)
    assert msg.data == b"late"
    assert time.monotonic() - started < 4.0  # handed over, not found at the end of a 5 s wait


async def test_a_deleted_consumer_is_reported_and_not_hammered(nc: Client) -> None:
    js = nc.jetstream()
    requests: list[float] = []

    async def count(msg) -> None:  # type: ignore[no-untyped-def]
        requests.append(time.monotonic())

    await nc.subscribe("$JS.API.CONSUMER.MSG.NEXT.P.c", cb=count)
    puller = Puller(nc, "P", "c")
    await puller.subscribe()

    async def requested() -> bool:
        return bool(requests)

    with structlog.testing.capture_logs() as logs:
        take = asyncio.create_task(puller.take(5, timeout=3.0))
        await eventually(requested, timeout_s=5, what="the first pull request")
        await js.delete_consumer("P", "c")
        assert await take == []
        assert await puller.take(5, timeout=2.0) == []
    assert any(e["event"] == "pull_request_refused" and e["status"] == "409" and e["consumer"] == "c" for e in logs), logs
    # a request per expiry, or per refusal and its 0.5 s pause: not one per turn of the loop
    assert 2 <= len(requests) <= 12, requests


async def test_settling_gathers_the_rest_of_a_batch_but_not_when_it_is_full(nc: Client) -> None:
    js = nc.jetstream()
    puller = Puller(nc, "P", "c")
    await puller.subscribe()
    for i in range(10):
        await js.publish(f"p.{i}.in", str(i).encode())
    started = time.monotonic()
    full = await puller.take(10, timeout=5.0, settle_s=5.0)
    assert [int(m.data) for m in full] == list(range(10))
    assert time.monotonic() - started < 4.0  # all there at once: no settling wait
    for msg in full:
        await msg.ack()

    async def later() -> None:
        await asyncio.sleep(0.2)  # the rest comes while the first is settling
        for i in range(13, 20):
            await js.publish(f"p.{i}.in", str(i).encode())

    for i in range(10, 13):
        await js.publish(f"p.{i}.in", str(i).encode())
    rest = asyncio.create_task(later())
    gathered = await puller.take(10, timeout=5.0, settle_s=5.0)
    await rest
    assert [int(m.data) for m in gathered] == list(range(10, 20))  # one batch, not 3 then 7
