"""The foundation issue's behaviour, through the bus, against `wf up` and its real processes."""

from __future__ import annotations

import asyncio
import json

import nats.js.errors
import pytest

from schemas import BlockEnded, BlockStarted, JobCompleted, JobFailed, JobStarted, event_decoder
from services.common.bus import read_history
from tests.conftest import eventually, wait_terminal
from wf import client
from wf.client import WfError

pytestmark = pytest.mark.integration


def workreq(name="SleepDemo", blocks=((3, [1, 2, 1, 3, 1, 2, 1]), (1, [2, 1]), (2, [1, 1, 1]))):
    return json.dumps(
        {
            "name": name,
            "desc": "integration",
            "blocks": [
                {"desc": f"block {b}", "rate_limit": rate, "jobs": [{"name": "sleep", "desc": f"j{j}", "args": {"seconds": str(s)}} for j, s in enumerate(secs)]}
                for b, (rate, secs) in enumerate(blocks)
            ],
        }
    ).encode()


async def submit_and_exec(nc, body=None):
    reply = await client.submit(nc, body or workreq())
    assert reply["verdict"] == "approved"
    await client.execute(nc, reply["id"])
    return reply["id"]


async def test_a_multi_block_workflow_completes_in_block_order_within_rate_limits(nc):
    wf_id = await submit_and_exec(nc)
    status = await wait_terminal(nc, wf_id)
    assert status["status"] == "completed" and status["verdict"] == "approved"
    assert not status["had_errors"]
    assert [b["status"] for b in status["blocks"]] == ["completed"] * 3
    assert all(j["status"] == "completed" for b in status["blocks"] for j in b["jobs"])

    events = [event_decoder.decode(m.data) for m in await read_history(nc.jetstream(), wf_id)]
    rates = [3, 1, 2]
    current_block, running, peak = None, set(), {}
    for ev in events:
        if isinstance(ev, BlockStarted):
            assert current_block is None, "a block started before the previous one ended"
            current_block = ev.block
        elif isinstance(ev, BlockEnded):
            assert ev.block == current_block and not running
            current_block = None
        elif isinstance(ev, JobStarted):
            assert ev.block == current_block, "a job ran outside its block"
            running.add(ev.job)
            peak[ev.block] = max(peak.get(ev.block, 0), len(running))
        elif isinstance(ev, (JobCompleted, JobFailed)):
            running.discard(ev.job)
    assert [e.block for e in events if isinstance(e, BlockStarted)] == [0, 1, 2]
    for block, rate in enumerate(rates):
        assert 1 <= peak[block] <= rate
    assert peak[0] == 3, "block 0 should have used its whole rate limit"
    completed = [(e.block, e.job) for e in events if isinstance(e, JobCompleted)]
    assert sorted(completed) == sorted(set(completed)) and len(completed) == 12


async def test_the_status_projection_is_in_kv_wf_status(nc):
    wf_id = await submit_and_exec(nc, workreq(blocks=((2, [1, 1]),)))
    status = await wait_terminal(nc, wf_id)
    kv = await nc.jetstream().key_value("wf_status")

    async def projected():
        try:
            entry = await kv.get(wf_id)
        except nats.js.errors.KeyNotFoundError:  # not projected yet
            return None
        return json.loads(entry.value) if json.loads(entry.value)["status"] == "completed" else None

    assert await eventually(projected, what="the projection") == status


async def test_exec_twice_gives_409(nc):
    wf_id = await submit_and_exec(nc, workreq(blocks=((1, [1]),)))
    with pytest.raises(WfError) as err:
        await client.execute(nc, wf_id)
    assert err.value.code == 409


async def test_eight_concurrent_execs_start_the_workflow_once(nc):
    reply = await client.submit(nc, workreq(blocks=((2, [1, 1, 1]),)))
    results = await asyncio.gather(*(client.execute(nc, reply["id"]) for _ in range(8)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, dict)]
    conflicts = [r for r in results if isinstance(r, WfError) and r.code == 409]
    assert len(ok) == 1 and len(conflicts) == 7, results
    await wait_terminal(nc, reply["id"])
    events = [event_decoder.decode(m.data) for m in await read_history(nc.jetstream(), reply["id"])]
    assert sum(type(e).__name__ == "ExecRequested" for e in events) == 1
    assert sum(isinstance(e, JobCompleted) for e in events) == 3


@pytest.mark.parametrize("call", [client.execute, client.status])
async def test_unknown_ids_give_404(nc, call):
    for unknown in ("01JZZZZZZZZZZZZZZZZZZZZZZZ", "no-such-id", "wf.evt.>"):
        with pytest.raises(WfError) as err:
            await call(nc, unknown)
        assert err.value.code == 404


async def test_a_name_with_no_policy_is_rejected_stays_rejected_and_cannot_run(nc):
    await (await nc.jetstream().key_value("wf_es")).put("NobodyConfiguredThis", b"go")  # else: 423

    async def past_the_emergency_stop():  # intake sees the put through its KV watch, within ms
        try:
            await client.submit(nc, workreq(name="NobodyConfiguredThis"))
        except WfError as exc:
            return exc if exc.code != 423 else None
        return None

    rejection = await eventually(past_the_emergency_stop, what="a verdict instead of 423")
    assert rejection.code == 400
    assert rejection.body["verdict"] == "rejected"
    assert rejection.body["error"] == {"code": 400, "message": "no policy for WorkReq name 'NobodyConfiguredThis'"}
    wf_id = rejection.body["id"]
    status = await client.status(nc, wf_id)
    assert status["verdict"] == "rejected" and "no policy" in status["reason"] and status["status"] == "not_started"
    with pytest.raises(WfError) as err:
        await client.execute(nc, wf_id)
    assert err.value.code == 412


async def test_an_invalid_argument_is_rejected_naming_block_job_and_argument(nc):
    body = json.loads(workreq(blocks=((1, [1]), (1, [1, 1]))))
    body["blocks"][1]["jobs"][1]["args"]["seconds"] = "0"
    with pytest.raises(WfError) as err:
        await client.submit(nc, json.dumps(body).encode())
    assert err.value.code == 400
    assert err.value.message.startswith("invalid job: block 1 job 1 (sleep) argument 'seconds'")


GARBAGE = [b"", b"not json", b"[]", b"{}", b'{"id": 5}', b"\xff\xfe\x00", b'{"id": "x", "extra": 1}', b"null"]


async def test_garbage_on_every_endpoint_gives_400_and_the_services_keep_answering(nc):
    for subject in ("wf.api.submit", "wf.api.exec", "wf.api.status"):
        for body in GARBAGE:
            with pytest.raises(WfError) as err:
                await client.call(nc, subject, body)
            assert err.value.code == 400, (subject, body, err.value)
            assert err.value.body["error"]["code"] == 400
    wf_id = await submit_and_exec(nc, workreq(blocks=((1, [1]),)))
    assert (await wait_terminal(nc, wf_id))["status"] == "completed"


async def test_all_five_services_answer_srv_ping(nc):
    from wf.up import ping_services

    seen = await ping_services(nc, wait_s=1.0)
    assert seen == {"wf-intake": 1, "wf-policy": 1, "wf-executor": 1, "wf-status": 1, "wf-jobrunner": 2}
    info = json.loads((await nc.request("$SRV.INFO.wf-intake", b"", timeout=2)).data)
    assert {e["subject"] for e in info["endpoints"]} == {
        "wf.api.submit", "wf.api.exec", "wf.api.cancel", "wf.api.upload", "wf.api.approve", "wf.api.deny",
        "wf.api.pause", "wf.api.resume"}
    stats = json.loads((await nc.request("$SRV.STATS.wf-status", b"", timeout=2)).data)
    assert stats["endpoints"][0]["num_requests"] > 0


async def test_every_event_is_visible_on_wf_evt(nc):
    seen = []

    async def record(msg):
        seen.append(msg.subject)

    sub = await nc.subscribe("wf.evt.>", cb=record)
    await nc.flush()
    await nc.flush()
    wf_id = await submit_and_exec(nc, workreq(blocks=((1, [1]),)))
    await wait_terminal(nc, wf_id)

    async def all_seen():
        return f"wf.evt.{wf_id}.workflow.completed" in seen

    await eventually(all_seen, what="the workflow.completed event on wf.evt.>")
    await sub.unsubscribe()
    mine = [s.removeprefix(f"wf.evt.{wf_id}.") for s in seen if s.startswith(f"wf.evt.{wf_id}.")]
    assert mine == [
        "submitted", "approved", "exec_requested", "workflow.started", "block.0.started",
        "job.0.0.started", "job.0.0.completed", "block.0.completed", "workflow.completed",
    ]


async def test_bad_events_injected_into_the_stream_are_terminated_not_retried_forever(nc):
    from services.common.ids import new_id

    js = nc.jetstream()
    ghost = new_id()
    await js.publish(f"wf.evt.{ghost}.job.0.0.completed", b"{not json")
    await js.publish(f"wf.evt.{ghost}.job.0.0.completed",
                     b'{"type": "job.completed", "id": "%s", "at": 1.0, "block": 0, "job": 0}' % ghost.encode())

    async def settled():
        info = await js.consumer_info("WF_EVENTS", "status")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(settled, what="the status consumer to have nothing pending or un-acked")
    with pytest.raises(WfError) as err:
        await client.status(nc, ghost)
    assert err.value.code == 404
    wf_id = await submit_and_exec(nc, workreq(blocks=((1, [1]),)))  # and nothing else was disturbed
    assert (await wait_terminal(nc, wf_id))["status"] == "completed"


async def test_a_request_over_the_size_limit_gets_413_and_a_workreq_over_a_count_limit_400(nc):
    with pytest.raises(WfError) as err:
        await client.submit(nc, workreq(blocks=((1, [1]),)) + b" " * 200_001)
    assert err.value.code == 413 and "over the limit of 200000 (WF_MAX_REQUEST_BYTES)" in err.value.message
    with pytest.raises(WfError) as err:
        await client.submit(nc, workreq(blocks=((5, [1] * 101),)))
    assert err.value.code == 400
    assert err.value.message == ("WorkReq too large: block 0's number of jobs is 101, over the limit of 100 "
                                 "(WF_MAX_JOBS_PER_BLOCK)")
    assert "id" not in err.value.body, "nothing was stored"
