"""services/common/consumer_reader.py against a real nats-server: a consumer gets each message when it arrives
(not when a batch fills or a pull request expires), never more than it asked for, and nothing is
lost; a consumer that disappears is reported and not hammered with requests."""

import asyncio
import random
import subprocess
import time
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest
import structlog.testing
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from services.common.consumer_reader import ConsumerReader
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
    puller = ConsumerReader(nc, "P", "c")
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
    puller = ConsumerReader(nc, "P", "c")
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
    puller = ConsumerReader(nc, "P", "c")
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
    puller = ConsumerReader(nc, "P", "c")
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
    puller = ConsumerReader(nc, "P", "c")
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


async def test_a_request_the_server_forgot_is_replaced_once_its_heartbeats_stop(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A server restarted under an open pull request forgets it. The request asked for idle
    heartbeats; once they stop, the reader makes a new one, so a message stored after the restart
    is handed over in seconds, not when the forgotten request would have expired (20 s here)."""
    from tests.conftest import free_port, wait_for_port
    from wf.up import find_nats_server

    port = free_port()
    argv = [find_nats_server(None), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_port(port, 10)
        conn = await nats.connect(f"nats://127.0.0.1:{port}", max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        js = conn.jetstream()
        await js.add_stream(StreamConfig(name="P", subjects=["p.>"]))
        await js.add_consumer("P", ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT))
        reader = ConsumerReader(conn, "P", "c")
        await reader.subscribe()
        with structlog.testing.capture_logs() as logs:
            take = asyncio.create_task(reader.take(1, timeout=20.0))
            await asyncio.sleep(0)  # its request is sent
            await eventually(lambda: _flushed(conn), 5, what="the pull request to reach the server")
            server.kill()
            server.wait(timeout=10)
            server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert wait_for_port(port, 10)
            await eventually(lambda: _connected(conn), 10, what="the reconnect")
            await eventually(lambda: _published(js), 10, what="the stream to take a message after the restart")
            started = time.monotonic()
            msgs = await take
        assert [m.data for m in msgs] == [b"after"]
        assert time.monotonic() - started < 12, "waited for the forgotten request's expiry"
        assert any(e["event"] == "pull_request_lost" for e in logs), logs
        assert not any(e["event"] == "pull_request_refused" for e in logs), logs  # the heartbeat was accepted
        await conn.close()
    finally:
        server.kill()
        server.wait(timeout=10)


async def _flushed(conn: Client) -> bool:
    await conn.flush(timeout=2)
    return True


async def _connected(conn: Client) -> bool:
    return conn.is_connected


async def _published(js) -> bool:  # type: ignore[no-untyped-def]
    try:
        await js.publish("p.x", b"after", timeout=1)
        return True
    except (nats.errors.Error, TimeoutError):
        return False


async def test_a_busy_service_does_not_take_its_open_request_for_lost(nc: Client) -> None:
    """The service holds the event loop (a long batch) while its request is open: the heartbeats
    wait unread on the socket. The next take must not count that time as silence and open a second
    request beside the first (which would break the credit count)."""
    requests: list[float] = []

    async def count(msg) -> None:  # type: ignore[no-untyped-def]
        requests.append(time.monotonic())

    await nc.subscribe("$JS.API.CONSUMER.MSG.NEXT.P.c", cb=count)
    js = nc.jetstream()
    reader = ConsumerReader(nc, "P", "c")
    await reader.subscribe()
    await js.publish("p.a.in", b"first")
    with structlog.testing.capture_logs() as logs:
        [first] = await reader.take(5, timeout=4.0)  # its request stays open: 4 more, 1 s heartbeats
        await first.ack()
        time.sleep(3.5)  # the loop held: three heartbeats come and wait unread
        assert await reader.take(5, timeout=0.3) == []
        await js.publish("p.b.in", b"second")
        [second] = await reader.take(5, timeout=3.0)
        await second.ack()
    assert second.data == b"second"
    assert not any(e["event"] == "pull_request_lost" for e in logs), logs
    assert len(requests) == 1, f"{len(requests)} pull requests, one was open all along"
