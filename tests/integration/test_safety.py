"""Rate control and stopping through the bus: emergency stop, cancel, fatal failures, delivery limits."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import nats
import nats.errors
import pytest

from schemas import (
    Approved,
    CancelRequested,
    ExecRequested,
    JobCommand,
    JobStarted,
    Submitted,
    WorkflowEnded,
    encoder,
    event_decoder,
    subjects,
    workreq_decoder,
)
from services.buckets import BucketConfig, BucketStore, load_bucket_configs
from services.common.bus import last_event, publish_event, read_history
from services.common.ids import new_id
from services.common.topology import JOBS_STREAM, RUNNER_CONSUMER, ensure_topology
from services.inventory import InventorySource
from services.jobrunner.runner import JobRunner
from services.jobs import JobEnv, JobRegistry, builtin_jobs
from services.safety.stops import EmergencyStops
from tests.conftest import REPO, eventually, start_system
from wf import client
from wf.client import WfError

pytestmark = pytest.mark.integration
NAME = "SafetyTest"


def configure(config_dir: Path, buckets_extra: dict | None = None) -> None:
    shutil.copytree(REPO / "configs", config_dir)
    with open(config_dir / "policies.json", "a") as fh:
        fh.write(json.dumps({"Name": NAME, "Policies": [{"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["sleep", "tokenBucket"]}}]}) + "\n")
    with open(config_dir / "es.json", "a") as fh:
        fh.write(json.dumps({"Name": NAME, "Status": "go"}) + "\n")
    buckets = json.loads((config_dir / "buckets.json").read_text()) | (buckets_extra or {})
    (config_dir / "buckets.json").write_text(json.dumps(buckets))


@pytest.fixture(scope="module")
def safety_system(tmp_path_factory):
    """Real durations (time scale 1): a job still running when its workflow stops was truly cancelled."""
    tmp = tmp_path_factory.mktemp("safety")
    configure(tmp / "configs", {"drained": {"size": 1, "refill": 1, "every": "1h"}})
    system = start_system(tmp, "--time-scale", "1", "--executors", "2", "--runners", "2", config_dir=tmp / "configs")
    yield system
    assert system.stop() == 0, system.log_tail()


@pytest.fixture
async def snc(safety_system):
    nc = await nats.connect(safety_system.url)
    yield nc
    await nc.close()


def sleeps(*blocks):
    """blocks: (rate_limit, [seconds, ...]) each."""
    return json.dumps({"name": NAME, "blocks": [
        {"rate_limit": rate, "jobs": [{"name": "sleep", "args": {"seconds": str(s)}} for s in secs]} for rate, secs in blocks
    ]}).encode()


async def start(nc, body) -> str:
    reply = await client.submit(nc, body)
    assert reply["verdict"] == "approved"
    await client.execute(nc, reply["id"])
    return reply["id"]


async def running_jobs(nc, wf_id, count):
    async def probe():
        status = await client.status(nc, wf_id)
        return sum(j["status"] == "running" for b in status["blocks"] for j in b["jobs"]) >= count

    await eventually(probe, what=f"{count} running jobs in {wf_id}")


async def wait_ended(nc, ids, timeout_s=10.0) -> dict[str, float]:
    """Watch wf_status until every id is terminal; returns when (loop time) each became so."""
    kv = await nc.jetstream().key_value("wf_status")
    watcher = await kv.watchall()
    loop = asyncio.get_running_loop()
    ended: dict[str, float] = {}
    deadline = loop.time() + timeout_s
    try:
        while len(ended) < len(ids):
            left = deadline - loop.time()
            if left <= 0:
                pytest.fail(f"not ended within {timeout_s} s: {set(ids) - set(ended)}")
            try:
                entry = await watcher.updates(timeout=left)
            except nats.errors.TimeoutError:
                continue
            if entry is None or entry.key not in ids or entry.key in ended:
                continue
            if json.loads(entry.value)["status"] in ("completed", "failed"):
                ended[entry.key] = loop.time()
    finally:
        await watcher.stop()
    return ended


async def job_errors(nc, wf_id, block, expected_count):
    async def probe():
        jobs = (await client.status(nc, wf_id))["blocks"][block]["jobs"]
        failed = [j for j in jobs if j["status"] == "failed"]
        return jobs if len(failed) >= expected_count else None

    return await eventually(probe, what=f"{expected_count} failed jobs in block {block} of {wf_id}")


async def test_an_emergency_stop_halts_every_running_workflow_of_its_name_within_a_second(snc):
    es = await snc.jetstream().key_value("wf_es")
    idle = (await client.submit(snc, sleeps((1, [1]))))["id"]  # approved, not executed
    ids = [await start(snc, sleeps((2, [30, 30, 30, 30]), (1, [1]))) for _ in range(4)]
    for wf_id in ids:
        await running_jobs(snc, wf_id, 2)
    loop = asyncio.get_running_loop()
    watch = asyncio.create_task(wait_ended(snc, set(ids)))
    await asyncio.sleep(0)  # let the watch start before the put
    put_at = loop.time()
    await es.put(NAME, b"stop")
    ended = await watch
    latency_ms = (max(ended.values()) - put_at) * 1000
    print(f"\nemergency stop: {latency_ms:.0f} ms from `kv put wf_es {NAME} stop` to the last of {len(ids)} "
          f"running workflows' terminal status (each: {sorted(round((t - put_at) * 1000) for t in ended.values())} ms)")
    assert latency_ms < 5000, "the 30 s jobs must not have been waited for"
    try:
        for wf_id in ids:
            status = await client.status(snc, wf_id)
            assert status["status"] == "failed" and status["was_es_stopped"], status
            jobs = await job_errors(snc, wf_id, 0, 2)  # the two running jobs, cancelled on their runners
            assert [j["status"] for j in jobs] == ["failed", "failed", "not_started", "not_started"]
            assert {j["error"] for j in jobs[:2]} == {"cancelled: emergency stop"}
            assert status["blocks"][1]["status"] == "not_started"
            async def drained(wf_id=wf_id):  # the runners drop a stopped workflow's queued commands
                info = await snc.jetstream().stream_info(JOBS_STREAM, subjects_filter=f"wf.cmd.job.{wf_id}.>")
                return not info.state.subjects

            await eventually(drained, what="the stopped workflow's queued commands to be dropped")
        with pytest.raises(WfError) as err:
            await client.submit(snc, sleeps((1, [1])))
        assert err.value.code == 423
        with pytest.raises(WfError) as err:
            await client.execute(snc, idle)
        assert err.value.code == 423
    finally:
        await es.put(NAME, b"go")

    async def accepted_again():
        try:
            return (await client.submit(snc, sleeps((1, [1]))))["verdict"] == "approved"
        except WfError:
            return False

    await eventually(accepted_again, what="submissions once the name is go again")


async def test_cancel_stops_one_workflow_and_its_running_jobs(snc):
    other = await start(snc, sleeps((1, [2])))
    wf_id = await start(snc, sleeps((2, [30, 30, 30]), (1, [1])))
    await running_jobs(snc, wf_id, 2)
    assert await client.cancel(snc, wf_id) == {"id": wf_id}
    await wait_ended(snc, {wf_id})
    status = await client.status(snc, wf_id)
    assert status["status"] == "failed" and not status["was_es_stopped"]
    jobs = await job_errors(snc, wf_id, 0, 2)
    assert [j["status"] for j in jobs] == ["failed", "failed", "not_started"]
    assert {j["error"] for j in jobs[:2]} == {"cancelled by request"}
    events = [event_decoder.decode(m.data) for m in await read_history(snc.jetstream(), wf_id)]
    assert any(isinstance(e, CancelRequested) for e in events)
    assert [e.stopped_by for e in events if isinstance(e, WorkflowEnded)] == ["cancel"]
    with pytest.raises(WfError) as err:
        await client.cancel(snc, wf_id)
    assert err.value.code == 409
    with pytest.raises(WfError) as err:
        await client.cancel(snc, new_id())
    assert err.value.code == 404
    await wait_ended(snc, {other})
    assert (await client.status(snc, other))["status"] == "completed", "a cancel stops only its own workflow"


async def test_a_fatal_failure_cancels_the_jobs_still_running_in_its_block(snc, safety_system):
    store = BucketStore(await snc.jetstream().key_value("wf_buckets"))
    while await store.take("drained", BucketConfig(size=1, refill=1, every="1h")) == 0.0:
        pass  # empty it
    body = json.dumps({"name": NAME, "blocks": [
        {"rate_limit": 2, "jobs": [{"name": "sleep", "args": {"seconds": "30"}},
                                   {"name": "tokenBucket", "args": {"bucket": "drained", "fatal": "true"}}]},
        {"rate_limit": 1, "jobs": [{"name": "sleep", "args": {"seconds": "1"}}]},
    ]}).encode()
    wf_id = await start(snc, body)
    await wait_ended(snc, {wf_id}, timeout_s=10)
    jobs = await job_errors(snc, wf_id, 0, 2)
    assert jobs[1]["error"] == "no token in bucket 'drained' within 1 s"
    assert jobs[0]["error"] == "cancelled: a fatal failure ended its block"
    status = await client.status(snc, wf_id)
    assert status["status"] == "failed" and status["blocks"][1]["status"] == "not_started"


async def test_a_command_delivered_too_often_fails_saying_so_instead_of_hanging(nats_server):
    nc = await nats.connect(nats_server)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        wf_id = new_id()
        req = workreq_decoder.decode(b'{"name": "SleepDemo", "blocks": [{"jobs": [{"name": "sleep", "args": {"seconds": "1"}}]}]}')
        for ev in (Submitted(id=wf_id, at=1.0, req=req), Approved(id=wf_id, at=1.0), ExecRequested(id=wf_id, at=1.0)):
            await publish_event(js, ev)  # a real, executing workflow: the runner's defence lets it through
        cmd = JobCommand(id=wf_id, block=0, job=0, name="sleep", args={"seconds": "1"}, at=time.time(), workreq="SleepDemo")
        await js.publish(subjects.job_command(wf_id, 0, 0), encoder.encode(cmd))
        sub = await js.pull_subscribe_bind(durable=RUNNER_CONSUMER, stream=JOBS_STREAM)
        for _ in range(5):  # five runners took it and vanished
            (msg,) = await sub.fetch(1, timeout=5)
            await msg.nak()
        (msg,) = await sub.fetch(1, timeout=5)
        assert msg.metadata.num_delivered == 6
        env = JobEnv(inventory=InventorySource(REPO / "data"), buckets=load_bucket_configs(REPO / "configs" / "buckets.json"))
        es = EmergencyStops()
        es._set("SleepDemo", "go")  # as if read from wf_es
        runner = JobRunner(js, JobRegistry(builtin_jobs(env)), 0.0, es, max_deliveries=5)
        await runner.handle(msg)
        failed = await last_event(js, f"wf.evt.{wf_id}.job.0.0.failed")
        assert failed is not None
        assert event_decoder.decode(failed.data).error.startswith("gave up after 5 deliveries")
        assert await last_event(js, f"wf.evt.{wf_id}.job.0.0.started") is None, "it must not run a sixth time"
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=0.5)  # terminated: never delivered again
    finally:
        await nc.close()


async def test_a_dispatch_bucket_holds_the_command_rate_across_several_executors(tmp_path):
    configure(tmp_path / "configs", {"sleepRate": {"size": 10, "refill": 10, "every": "1s", "jobs": ["sleep"]}})
    system = start_system(tmp_path, "--time-scale", "0", "--executors", "2", "--runners", "2", config_dir=tmp_path / "configs")
    nc = await nats.connect(system.url)
    try:
        ids = [await start(nc, sleeps((20, [1] * 20))) for _ in range(3)]
        await wait_ended(nc, set(ids), timeout_s=30)
        starts = []
        for wf_id in ids:
            events = [event_decoder.decode(m.data) for m in await read_history(nc.jetstream(), wf_id)]
            starts += [e.at for e in events if isinstance(e, JobStarted)]
        starts.sort()
        assert len(starts) == 60
        span_s = starts[-1] - starts[0]
        busiest = max(sum(1 for t in starts[i:] if t < starts[i] + 1.0) for i in range(len(starts)))
        print(f"\ndispatch bucket 10/s (size 10): 60 jobs over 2 executors started within {span_s:.2f} s; busiest second: {busiest}")
        assert span_s >= (60 - 10) / 10 - 0.5, "without the bucket these instant jobs would all start at once"
        assert busiest <= 10 + 10
    finally:
        await nc.close()
        assert system.stop() == 0


async def test_es_json_seeds_wf_es_without_lifting_an_operators_stop_and_a_bad_file_stops_all(nats_server, tmp_path):
    from services.safety.seed import seed_emergency_stops

    nc = await nats.connect(nats_server)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        kv = await js.key_value("wf_es")
        path = tmp_path / "es.json"
        path.write_text('{"Name": "A", "Status": "go"}\n{"Name": "B", "Status": "stop"}\n')
        assert await seed_emergency_stops(kv, path) == {"A": "go", "B": "stop"}
        await kv.put("A", b"stop")  # an operator stops A; wf up restarts with the same file
        path.write_text('{"Name": "A", "Status": "go"}\n{"Name": "B", "Status": "go"}\n{"Name": "C", "Status": "go"}\n')
        assert await seed_emergency_stops(kv, path) == {"A": "stop", "B": "stop", "C": "go"}
        path.write_text('{"Name": "A", "Status": "gogo"}\n')
        assert await seed_emergency_stops(kv, path) == {"A": "stop", "B": "stop", "C": "stop"}
    finally:
        await nc.close()


async def test_a_token_comes_back_after_the_interval(nats_server):
    nc = await nats.connect(nats_server)
    try:
        await ensure_topology(nc.jetstream())
        store = BucketStore(await nc.jetstream().key_value("wf_buckets"))
        config = BucketConfig(size=1, refill=1, every="1s")
        assert await store.take("refill", config) == 0.0
        wait_s = await store.take("refill", config)
        assert 0.5 < wait_s <= 1.0
        loop = asyncio.get_running_loop()
        due = loop.time() + wait_s

        async def refilled():
            return loop.time() >= due and await store.take("refill", config) == 0.0

        await eventually(refilled, 5, what="the refill")
    finally:
        await nc.close()
