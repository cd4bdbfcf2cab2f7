"""Pause under faults: a paused workflow stays paused through a kill -9 of its executor, and of every
service and nats-server at once, for longer than every lease and ack wait; then resume completes it
with each job run once."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from schemas import JobStarted, event_decoder
from services.common.bus import last_event, read_history
from services.common.topology import EXECUTOR_ACK_WAIT_S
from tests.conftest import eventually, processes, start_system
from wf import client

from .harness import assert_clean, check_invariants, kill9, kill_role, restarted, retrying

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ROLES = ("intake", "policy", "executor", "jobrunner", "status")


def workreq(jobs: int = 4, seconds: int = 2) -> bytes:
    """SleepDemo, one block at rate 1: jobs one after another."""
    return json.dumps({"name": "SleepDemo", "desc": "pause chaos", "blocks": [
        {"desc": "b0", "rate_limit": 1, "jobs": [{"name": "sleep", "args": {"seconds": str(seconds)}} for _ in range(jobs)]}
    ]}).encode()


async def started(nc, wf_id: str) -> list[int]:
    msgs = await retrying(lambda: read_history(nc.jetstream(), wf_id))
    return sorted(ev.job for ev in (event_decoder.decode(m.data) for m in msgs) if isinstance(ev, JobStarted))


async def paused_status(nc, wf_id: str) -> dict | None:
    try:
        status = await client.status(nc, wf_id)
    except (client.WfError, client.Unreachable, nats.errors.Error):
        return None
    return status if status["status"] == "paused" else None


async def still_paused(nc, wf_id: str, jobs: list[int], seconds: float) -> None:
    """For `seconds`: status `paused` (once the services answer) and no job started beyond `jobs`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        assert await started(nc, wf_id) == jobs
        await asyncio.sleep(0.25)
    status = await eventually(lambda: paused_status(nc, wf_id), 30, what="the status still paused")
    assert status["paused_by"] == "admin"


async def test_a_paused_workflow_stays_paused_through_kills_and_resume_completes_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    system = start_system(tmp_path, "--time-scale", "1")
    nc = await nats.connect(system.url, max_reconnect_attempts=-1, reconnect_time_wait=0.25)
    try:
        reply = await client.submit(nc, workreq())
        wf_id = reply["id"]
        await client.execute(nc, wf_id)
        await eventually(lambda: last_event(nc.jetstream(), f"wf.evt.{wf_id}.job.0.0.started"), what="job 0 running")
        await client.pause(nc, wf_id)
        await eventually(lambda: paused_status(nc, wf_id), 5, what="paused")
        await eventually(lambda: last_event(nc.jetstream(), f"wf.evt.{wf_id}.job.0.0.completed"), 10,
                         what="the running job to complete")

        # the executor that owns it dies: its successor rebuilds it paused; longer than the ack wait
        pid = await kill_role(system, "executor")
        await restarted(system, "executor", pid)
        await still_paused(nc, wf_id, [0], EXECUTOR_ACK_WAIT_S + 4)

        # every service and nats-server at once: still paused, on the same store
        for role in ("nats-server", *ROLES):
            for pid in processes(system.proc.pid).get(role, []):
                kill9(pid)
        await asyncio.sleep(1.0)

        async def all_back() -> bool:
            found = processes(system.proc.pid)
            if not all(found.get(role) for role in ("nats-server", *ROLES)):
                return False
            try:
                return (await client.status(nc, wf_id))["id"] == wf_id
            except (client.WfError, client.Unreachable, nats.errors.Error):
                return False

        await eventually(all_back, 90, what="every process back")
        await still_paused(nc, wf_id, [0], EXECUTOR_ACK_WAIT_S + 4)

        async def resumed() -> bool:
            try:
                return bool(await client.resume(nc, wf_id))
            except client.Unreachable:
                return False
            except client.WfError as err:
                if err.code == 503:
                    return False
                raise

        await eventually(resumed, 30, what="resume answered")
        report = await check_invariants(nc, [wf_id], reruns_allowed=False, timeout_s=60)
        assert_clean(report, system)
        assert await started(nc, wf_id) == [0, 1, 2, 3]
    finally:
        await nc.close()
        assert system.stop() == 0, system.log_tail()
