"""services/common/requester.py against a real nats-server: the Requester and the JetStream context
give nats-py's own results and exceptions, and nats-py's KeyValue goes through them (if a nats-py
release stops calling its context's `publish` and `get_msg`, these tests fail: the lock pins it)."""

import asyncio
import datetime
from collections.abc import AsyncIterator

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig

from services.common import requester as requester_module
from services.common.bus import follow_workflow, jetstream, times_delivered
from services.common.requester import JetStream
from services.common.topology import EVENTS_STREAM
from tests.conftest import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    """A connection to a bare nats-server (no services)."""
    conn = await nats.connect(nats_server)
    yield conn
    await conn.close()


def test_nothing_of_nats_py_is_replaced() -> None:
    import nats.aio.client
    import nats.aio.subscription
    import nats.js.client

    import services.common.bus  # noqa: F401  (every service imports it)

    for cls, name in [(nats.aio.client.Client, "request"), (nats.js.client.JetStreamContext, "publish"),
                      (nats.aio.subscription.Subscription, "next_msg"), (nats.aio.client.Client, "_send_publish")]:
        assert getattr(cls, name).__module__.startswith("nats."), (cls, name)


async def test_concurrent_requests_each_get_their_own_reply(nc: Client) -> None:
    async def echo(msg) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.001 * (int(msg.data) % 7))  # replies come back out of order
        await msg.respond(msg.data + b"!")

    await nc.subscribe("echo", cb=echo)
    js = jetstream(nc)
    replies = await asyncio.gather(*(js.requester.request("echo", str(i).encode(), timeout=5) for i in range(500)))
    assert [r.data for r in replies] == [f"{i}!".encode() for i in range(500)]
    assert (await js.requester.request("echo", b"7", timeout=None)).data == b"7!"  # no timeout, as nats-py allows
    assert not js.requester.waiting  # nothing left behind


async def test_a_request_nobody_serves_raises_no_responders(nc: Client) -> None:
    for request in (nc.request, jetstream(nc).requester.request):
        with pytest.raises(nats.errors.NoRespondersError):
            await request("nobody.here", b"", timeout=2)


async def test_an_unanswered_request_times_out_and_a_late_reply_harms_nothing(nc: Client) -> None:
    held: list = []  # type: ignore[type-arg]

    async def hold(msg) -> None:  # type: ignore[no-untyped-def]
        held.append(msg)

    await nc.subscribe("slow", cb=hold)
    replies = jetstream(nc).requester
    with pytest.raises(nats.errors.TimeoutError):
        await asyncio.wait_for(replies.request("slow", b"1", timeout=0.2), 0.2 + requester_module.SWEEP_S + 2)
    await held[0].respond(b"too late")  # to a request already given up

    async def answer(msg) -> None:  # type: ignore[no-untyped-def]
        await msg.respond(b"on time")
    await nc.subscribe("quick", cb=answer)
    assert (await replies.request("quick", b"", timeout=2)).data == b"on time"
    assert not replies.waiting

    async def swept() -> bool:  # the answered request's deadline is dropped at the next sweep
        return not replies.deadlines and replies.sweeper is None

    await eventually(swept, 5, what="the sweeper to forget the deadlines and stop")


async def test_jetstream_publish_acks_dedups_and_raises_the_library_errors(nc: Client) -> None:
    js = jetstream(nc)
    await js.add_stream(StreamConfig(name="FP", subjects=["fp.>"], allow_msg_ttl=True))
    first = await js.publish("fp.a", b"1", headers={"Nats-Msg-Id": "one"})
    again = await js.publish("fp.a", b"1", headers={"Nats-Msg-Id": "one"})
    second = await js.publish("fp.b", b"2", stream="FP")
    assert (first.stream, first.seq, bool(first.duplicate)) == ("FP", 1, False)
    assert (again.seq, again.duplicate) == (1, True)
    assert second.seq == 2
    for publish in (js.publish, nc.jetstream().publish):  # ours, then the library's: the same errors
        with pytest.raises(nats.js.errors.BadRequestError) as refused:
            await publish("fp.a", b"3", headers={"Nats-Expected-Last-Subject-Sequence": "0"})
        assert refused.value.err_code in (10071, 10164)
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await publish("no.stream.here", b"x")
        with pytest.raises(nats.js.errors.BadRequestError):  # the wrong stream expected
            await publish("fp.c", b"4", stream="OTHER")
    lasting = await js.publish("fp.ttl", b"t", msg_ttl=60)
    stored = await nc.jetstream().get_msg("FP", seq=lasting.seq)
    assert stored.headers is not None and stored.headers.get("Nats-TTL") == "60"


async def test_the_last_message_of_a_subject_reads_as_the_library_reads_it(nc: Client) -> None:
    js, theirs = jetstream(nc), nc.jetstream()
    await js.add_stream(StreamConfig(name="LM", subjects=["lm.>"], allow_direct=True))
    await js.publish("lm.a", b"first", headers={"X-One": "1"})
    await js.publish("lm.a", b"second", headers={"X-Two": "2"})
    await js.publish("lm.b", b"")
    for subject in ("lm.a", "lm.b"):
        ours = await js.get_last_msg("LM", subject, direct=True)
        lib = await theirs.get_last_msg("LM", subject, direct=True)
        assert (ours.subject, ours.seq, ours.data, ours.headers) == (lib.subject, lib.seq, lib.data, lib.headers)
        assert ours.time is not None and lib.time is not None
        assert abs(ours.time - lib.time) < datetime.timedelta(microseconds=1)
    for get in (js.get_last_msg, theirs.get_last_msg):
        with pytest.raises(nats.js.errors.NotFoundError):
            await get("LM", "lm.none", direct=True)


async def test_kv_goes_through_our_context_and_behaves_as_the_library_documents(nc: Client) -> None:
    js = jetstream(nc)
    kv = await js.create_key_value(bucket="fp", direct=True)
    sent = js.requester.count
    rev = await kv.create("k", b"1")
    assert js.requester.count == sent + 1, "nats-py's KeyValue no longer publishes through its context"
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await kv.create("k", b"2")
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await kv.update("k", b"2", last=rev + 10)
    rev2 = await kv.update("k", b"2", last=rev)
    sent = js.requester.count
    assert (await kv.get("k")).value == b"2" and rev2 > rev
    assert js.requester.count == sent + 1, "nats-py's KeyValue no longer reads through its context's get_msg"
    await kv.delete("k")
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get("k")
    await kv.create("k", b"3")  # a deleted key can be created again
    assert (await kv.get("k")).value == b"3"
    assert isinstance(js, JetStream)


async def test_a_follower_reads_the_backlog_in_order_then_live_events(nc: Client) -> None:
    js = jetstream(nc)
    await js.add_stream(StreamConfig(name=EVENTS_STREAM, subjects=["wf.evt.>"]))
    for i in range(40):
        await js.publish(f"wf.evt.W1.e{i}", str(i).encode())
    await js.publish("wf.evt.W2.other", b"x")
    follower = await follow_workflow(js, "W1")
    try:
        got = []
        while len(got) < 40:
            msg = await follower.next(5)
            assert msg is not None
            got.append(int(msg.data))
        assert got == list(range(40)) and msg.metadata.num_pending == 0
        assert await follower.next(0.2) is None  # nothing more: None, no exception
        await js.publish("wf.evt.W1.late", b"40")
        msg = await follower.next(5)
        assert msg is not None and msg.data == b"40" and follower.pending == 0
    finally:
        await follower.stop()


async def test_times_delivered_reads_what_the_metadata_says(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="TD", subjects=["td.>"]))
    await js.publish("td.x", b"x")
    sub = await js.pull_subscribe("td.x", durable="td")
    seen = []
    for _ in range(3):
        msg = (await sub.fetch(1, timeout=5))[0]
        seen.append((times_delivered(msg), msg.metadata.num_delivered))
        await msg.nak()
    assert seen == [(1, 1), (2, 2), (3, 3)]


async def test_a_follower_holds_at_most_its_buffer_and_reads_every_message_in_order(nc: Client) -> None:
    from services.common.bus import FOLLOW_BUFFER

    js = jetstream(nc)
    await js.add_stream(StreamConfig(name=EVENTS_STREAM, subjects=["wf.evt.>"]))
    total = FOLLOW_BUFFER * 3
    acks = [await js.publish_async(f"wf.evt.W3.e{i}", str(i).encode()) for i in range(total)]
    await asyncio.gather(*acks)
    follower = await follow_workflow(js, "W3")
    try:
        async def filled() -> bool:
            return len(follower._ready) >= FOLLOW_BUFFER

        await eventually(filled, 10, what="the follower's buffer to fill")
        await asyncio.sleep(0.2)  # deliveries go on only as it is read
        assert len(follower._ready) == FOLLOW_BUFFER
        got = []
        while len(got) < total:
            msg = await follower.next(5)
            assert msg is not None, f"stalled after {len(got)}"
            got.append(int(msg.data))
        assert got == list(range(total))
    finally:
        await follower.stop()
