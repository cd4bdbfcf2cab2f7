"""nats-py's request and JetStream publish, as services/common/fastpath.py replaces them, against a
real nats-server: the same results and the same exceptions as the library's own."""

import asyncio
from collections.abc import AsyncIterator

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig

from services.common import fastpath
from services.common.bus import times_delivered
from tests.conftest import eventually

pytestmark = pytest.mark.integration


REQUEST_FAST = getattr(nats.aio.client.Client.request, "_wf_fast", False)
needs_fast_request = pytest.mark.skipif(not REQUEST_FAST, reason="this nats-py's request is its own (fastpath stood aside)")


@pytest.fixture
async def nc(nats_server: str) -> AsyncIterator[Client]:
    """A connection to a bare nats-server (no services)."""
    conn = await nats.connect(nats_server)
    yield conn
    await conn.close()


def test_each_fast_path_is_in_use_unless_nats_py_changed_its_parameters() -> None:
    from nats.aio.subscription import Subscription

    for func, params in [
        (nats.aio.client.Client.request, ("self", "subject", "payload", "timeout", "old_style", "headers")),
        (nats.js.JetStreamContext.publish, ("self", "subject", "payload", "timeout", "stream", "headers", "msg_ttl")),
        (Subscription.next_msg, ("self", "timeout")),
    ]:
        assert getattr(func, "_wf_fast", False) or not fastpath._takes(func, *params), func


@needs_fast_request
async def test_concurrent_requests_each_get_their_own_reply(nc: Client) -> None:
    async def echo(msg) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.001 * (int(msg.data) % 7))  # replies come back out of order
        await msg.respond(msg.data + b"!")

    await nc.subscribe("echo", cb=echo)
    replies = await asyncio.gather(*(nc.request("echo", str(i).encode(), timeout=5) for i in range(500)))
    assert [r.data for r in replies] == [f"{i}!".encode() for i in range(500)]
    assert (await nc.request("echo", b"7", timeout=None)).data == b"7!"  # no timeout, as nats-py allows
    assert not nc._wf_replies.waiting  # nothing left behind


async def test_a_request_nobody_serves_raises_no_responders(nc: Client) -> None:
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request("nobody.here", b"", timeout=2)


@needs_fast_request
async def test_an_unanswered_request_times_out_and_a_late_reply_harms_nothing(nc: Client) -> None:
    held: list = []  # type: ignore[type-arg]

    async def hold(msg) -> None:  # type: ignore[no-untyped-def]
        held.append(msg)

    await nc.subscribe("slow", cb=hold)
    with pytest.raises(nats.errors.TimeoutError):
        await asyncio.wait_for(nc.request("slow", b"1", timeout=0.2), 0.2 + fastpath.SWEEP_S + 2)
    await held[0].respond(b"too late")  # to a request already given up
    async def answer(msg) -> None:  # type: ignore[no-untyped-def]
        await msg.respond(b"on time")
    await nc.subscribe("quick", cb=answer)
    assert (await nc.request("quick", b"", timeout=2)).data == b"on time"
    assert not nc._wf_replies.waiting

    async def swept() -> bool:  # the answered request's deadline is dropped at the next sweep
        return not nc._wf_replies.deadlines and nc._wf_replies.sweeper is None

    await eventually(swept, 5, what="the sweeper to forget the deadlines and stop")


async def test_jetstream_publish_acks_dedups_and_raises_the_library_errors(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="FP", subjects=["fp.>"]))
    first = await js.publish("fp.a", b"1", headers={"Nats-Msg-Id": "one"})
    again = await js.publish("fp.a", b"1", headers={"Nats-Msg-Id": "one"})
    second = await js.publish("fp.b", b"2")
    assert (first.stream, first.seq, bool(first.duplicate)) == ("FP", 1, False)
    assert (again.seq, again.duplicate) == (1, True)
    assert second.seq == 2
    with pytest.raises(nats.js.errors.BadRequestError) as refused:
        await js.publish("fp.a", b"3", headers={"Nats-Expected-Last-Subject-Sequence": "0"})
    assert refused.value.err_code in (10071, 10164)
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await js.publish("no.stream.here", b"x")


async def test_kv_create_update_and_recreate_behave_as_the_library_documents(nc: Client) -> None:
    kv = await nc.jetstream().create_key_value(bucket="fp")
    rev = await kv.create("k", b"1")
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await kv.create("k", b"2")
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await kv.update("k", b"2", last=rev + 10)
    rev2 = await kv.update("k", b"2", last=rev)
    assert (await kv.get("k")).value == b"2" and rev2 > rev
    await kv.delete("k")
    await kv.create("k", b"3")  # a deleted key can be created again
    assert (await kv.get("k")).value == b"3"


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
