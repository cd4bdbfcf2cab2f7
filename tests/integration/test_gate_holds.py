"""The gate holds against its own users, through the bus (real nats-server, real processes):

- a gate job (tokenBucket, validateDecom) that fails in any way ends its workflow: a malformed
  bucket state in KV `wf_buckets` once let the satellite erase run on, all 50 machines;
- duplicate JSON keys, numbers past their bounds, numeric args written as Python would read them:
  400 naming the problem;
- deleting emergency-stop keys without a per-key marker (a `Nats-Rollup: all` publish, a purge of
  the bucket's stream) stops what they covered, and `wf es show` says what the services enforce.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import nats
import pytest

from schemas import JobStarted, WorkflowEnded, event_decoder
from services.common.bus import read_history
from services.inventory import load_inventory
from tests.conftest import REPO, eventually, wait_terminal
from wf import client
from wf.client import WfError
from wf.erase import erase_satellite_workreq

pytestmark = pytest.mark.integration
BUCKET = "diskEraseSatellite"


async def run_to_end(nc, body: bytes, timeout_s: float = 60) -> dict:
    reply = await client.submit(nc, body)
    assert reply["verdict"] == "approved", reply
    await client.execute(nc, reply["id"])
    return await wait_terminal(nc, reply["id"], timeout_s)


async def events(nc, wf_id):
    return [event_decoder.decode(m.data) for m in await read_history(nc.jetstream(), wf_id)]


def erase_of(site: str) -> dict:
    return erase_satellite_workreq(load_inventory(REPO / "data"), site)


# ---------------------------------------------------------------- gates fail closed


async def test_a_malformed_token_bucket_ends_the_satellite_erase_before_any_disk_is_erased(nc):
    """The reported incident: `adg` erased 50/50 inside the bucket's 30 minutes."""
    buckets = await nc.jetstream().key_value("wf_buckets")  # the admin's credential: anything goes
    await buckets.put(BUCKET, b'{"tokens": "lots", "at": "yesterday"')
    try:
        status = await run_to_end(nc, json.dumps(erase_of("adg")).encode())
    finally:
        await buckets.delete(BUCKET)  # a bucket with no state starts full
    assert status["status"] == "failed" and status["had_errors"]
    check = status["blocks"][0]
    assert [j["status"] for j in check["jobs"]] == ["completed", "failed"]
    assert check["jobs"][1]["error"].startswith("job crashed"), check["jobs"][1]
    assert all(b["status"] == "not_started" for b in status["blocks"][1:]), "no later block may start"
    history = await events(nc, status["id"])
    started = [(e.block, e.job) for e in history if isinstance(e, JobStarted)]
    assert started == [(0, 0), (0, 1)], "no diskErase job may start"
    assert [e.stopped_by for e in history if isinstance(e, WorkflowEnded)] == ["fatal"]


async def test_erases_put_in_the_gates_own_block_wait_for_the_gate_and_never_run_when_it_fails(nc):
    """A user's own WorkReq passes the policies with the erases beside the token, at a rate that
    would start them all at once: nothing after a gate is dispatched before the gate completed."""
    req = erase_of("adv")
    check, first = req["blocks"][0], req["blocks"][1]
    req["blocks"] = [{"desc": "all at once", "rate_limit": 10, "jobs": check["jobs"] + first["jobs"][:5]}]
    buckets = await nc.jetstream().key_value("wf_buckets")
    await buckets.put(BUCKET, json.dumps({"tokens": 0, "at": time.time()}).encode())  # drained: no token for 30 min
    try:
        status = await run_to_end(nc, json.dumps(req).encode())
    finally:
        await buckets.delete(BUCKET)
    jobs = status["blocks"][0]["jobs"]
    assert status["status"] == "failed"
    assert jobs[1]["error"] == f"no token in bucket '{BUCKET}' within 1 s"
    assert [j["status"] for j in jobs[2:]] == ["not_started"] * 5
    started = [e.job for e in await events(nc, status["id"]) if isinstance(e, JobStarted)]
    assert started == [0, 1], "the erases must not start beside the gate"


# ---------------------------------------------------------------- strict input


JOB = '{"name": "sleep", "args": {"seconds": "1"}}'


@pytest.mark.parametrize("body, fragment", [
    ('{"name": "SleepDemo", "name": "SatelliteDiskErase", "blocks": [{"jobs": [%s]}]}' % JOB,
     "duplicate key 'name' at `$`"),
    ('{"name": "SleepDemo", "blocks": [{"jobs": [{"name": "sleep", "args": {"seconds": "1", "seconds": "99"}}]}]}',
     "duplicate key 'seconds' at `$.blocks[0].jobs[0].args`"),
    ('{"name": "SleepDemo", "blocks": [{"rate_limit": 1%s, "jobs": [%s]}]}' % ("0" * 30, JOB),
     "`$.blocks[0].rate_limit`"),
    ('{"name": "SleepDemo", "max_failures": 5000000, "blocks": [{"jobs": [%s]}]}' % JOB, "`$.max_failures`"),
    ('{"name": "SleepDemo", "blocks": [{"jobs": [{"name": "sleep", "args": {"seconds": "1_0"}}]}]}',
     "argument 'seconds': 'seconds' must be a whole number from 1 to 86,400 in plain digits, got '1_0'"),
    ('{"name": "SleepDemo", "blocks": [{"jobs": [{"name": "sleep", "args": {"seconds": "%s"}}]}]}' % ("9" * 400),
     "argument 'seconds'"),
])
async def test_ambiguous_or_out_of_bounds_input_is_a_400_naming_it(nc, body, fragment):
    with pytest.raises(WfError) as err:
        await client.submit(nc, body.encode())
    assert err.value.code == 400 and fragment in err.value.message, err.value.message


async def test_an_exec_body_with_a_repeated_id_is_a_400(nc):
    reply = await client.submit(nc, ('{"name": "SleepDemo", "blocks": [{"jobs": [%s]}]}' % JOB).encode())
    body = json.dumps({"id": reply["id"]})[:-1] + ', "id": "01JZZZZZZZZZZZZZZZZZZZZZZZ"}'
    with pytest.raises(WfError) as err:
        await client.call(nc, "wf.api.exec", body.encode())
    assert err.value.code == 400 and "duplicate key 'id'" in err.value.message


# ---------------------------------------------------------------- emergency stop is never ambiguous


def es_show(system) -> list[str]:
    env = {**os.environ, "WF_NATS_URL": system.operator_url}
    ran = subprocess.run([sys.executable, "-m", "wf.cli", "--data-dir", str(system.data_dir), "es", "show"],
                         capture_output=True, text=True, env=env, timeout=60, check=True)
    return [line.split("  (by ")[0] for line in ran.stdout.splitlines()]  # without who changed it last


async def long_sleep(nc) -> str:
    """A SleepDemo workflow whose job runs long (time scale 0.01: 6,000 s is a minute)."""
    reply = await client.submit(nc, ('{"name": "SleepDemo", "blocks": [{"jobs": [{"name": "sleep", "args": '
                                     '{"seconds": "6000"}}]}, {"jobs": [%s]}]}' % JOB).encode())
    await client.execute(nc, reply["id"])

    async def running():
        status = await client.status(nc, reply["id"])
        return status["blocks"][0]["jobs"][0]["status"] == "running"

    await eventually(running, what="the long sleep to run")
    return reply["id"]


async def stopped_within(nc, wf_id: str, deadline_s: float) -> tuple[dict, float]:
    loop = asyncio.get_running_loop()
    began = loop.time()
    status = await wait_terminal(nc, wf_id, timeout_s=deadline_s)
    return status, loop.time() - began


async def restore_es(nc) -> None:
    es = await nc.jetstream().key_value("wf_es")
    for name in ("SleepDemo", "SatelliteDiskErase"):
        await es.put(name, b"go")

    async def accepted():
        try:
            return (await client.submit(nc, ('{"name": "SleepDemo", "blocks": [{"jobs": [%s]}]}' % JOB).encode(),
                                        attempts=1))["verdict"] == "approved"
        except WfError:
            return False

    await eventually(accepted, what="SleepDemo to be accepted again")


async def test_a_rollup_all_is_refused_to_operators_and_stops_everything_within_a_second(nc, system):
    """An operator's `Nats-Rollup: all` would erase every stop and its record: wf-intake's gate
    refuses it. Written inside WF (an admin), it leaves no per-key delete marker, and every running
    workflow stops within a second all the same, `wf es show` agreeing."""
    assert any(line.startswith("SleepDemo go") for line in es_show(system))
    wf_id = await long_sleep(nc)
    operator = await nats.connect(system.operator_url)
    try:
        refused = json.loads((await operator.request("$KV.wf_es.Other", b"go", timeout=5,
                                                     headers={"Nats-Rollup": "all"})).data)
        assert refused["error"]["code"] == 400 and "rollup" in refused["error"]["description"].lower(), refused
        assert (await client.status(nc, wf_id))["status"] == "running"
        assert any(line.startswith("SleepDemo go") for line in es_show(system))
        # one message that wipes every other key of the bucket, leaving no per-key delete marker
        await nc.publish("$KV.wf_es.Other", b"go", headers={"Nats-Rollup": "all"})
        await nc.flush()
        status, took_s = await stopped_within(nc, wf_id, deadline_s=5)
        print(f"\nrollup-all on wf_es: the running workflow was stopped {took_s * 1000:.0f} ms after the publish")
        assert status["status"] == "failed" and status["was_es_stopped"], status
        assert took_s < 1.5

        async def cancelled_on_its_runner():
            job = (await client.status(nc, wf_id))["blocks"][0]["jobs"][0]
            return job["error"] == "cancelled: emergency stop"

        await eventually(cancelled_on_its_runner, 5, what="the running sleep to be cancelled on its runner")
        shown = es_show(system)
        assert any(line.startswith("Other go") for line in shown), shown
        assert not any(line.startswith(("SleepDemo", "SatelliteDiskErase")) for line in shown), shown
        with pytest.raises(WfError) as err:
            await client.submit(nc, ('{"name": "SleepDemo", "blocks": [{"jobs": [%s]}]}' % JOB).encode(), attempts=1)
        assert err.value.code == 423
    finally:
        await operator.close()
        await restore_es(nc)
        await (await nc.jetstream().key_value("wf_es")).delete("Other")


async def test_a_purge_of_the_emergency_stop_stream_stops_everything_within_a_second(nc, system):
    wf_id = await long_sleep(nc)
    try:
        await nc.jetstream().purge_stream("KV_wf_es")  # no message at all: only the stream's state says it
        status, took_s = await stopped_within(nc, wf_id, deadline_s=5)
        print(f"\npurge of KV_wf_es: the running workflow was stopped {took_s * 1000:.0f} ms after the purge")
        assert status["status"] == "failed" and status["was_es_stopped"], status
        assert took_s < 1.5

        async def shown_stopped():  # wf-intake's own check comes within a quarter of a second too
            return not [line for line in es_show(system) if line.endswith(" go")]

        await eventually(shown_stopped, 1.0, what="`wf es show` to list no name as go")
    finally:
        await restore_es(nc)


async def test_a_deleted_key_is_stopped_and_es_show_agrees(nc, system):
    wf_id = await long_sleep(nc)
    try:
        await (await nc.jetstream().key_value("wf_es")).delete("SleepDemo")
        status, _ = await stopped_within(nc, wf_id, deadline_s=5)
        assert status["was_es_stopped"]
        shown = es_show(system)
        assert not any(line.startswith("SleepDemo") for line in shown) and "SatelliteDiskErase go" in shown
    finally:
        await restore_es(nc)
