"""Fair, bounded resources (issue 16), through real processes: one caller filling its own share of
an endpoint leaves the others served; a workflow of long jobs started first leaves runner slots
for a small workflow started after it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from urllib.parse import urlsplit

import nats
import pytest

from tests.conftest import eventually, processes, start_system, wait_terminal
from wf import client

pytestmark = pytest.mark.integration

def sleeps(count: int, seconds: int, rate_limit: int, desc: str = "") -> bytes:
    job = {"name": "sleep", "args": {"seconds": str(seconds)}}
    block = {"rate_limit": rate_limit, "jobs": [job] * count}
    return json.dumps({"name": "SleepDemo", "desc": desc, "blocks": [block]}).encode()


SLEEP_BODY = sleeps(1, 1, 1)


async def test_a_caller_at_its_own_limit_does_not_lock_out_another_person(tmp_path):
    """Limits of 4 in flight per endpoint, 2 per caller; submits held in flight (policy stopped, each
    submit waits WF_VERDICT_WAIT_S for a verdict that does not come, then answers `pending`)."""
    system = start_system(tmp_path, env={"WF_MAX_IN_FLIGHT": "4", "WF_MAX_IN_FLIGHT_PER_CALLER": "2",
                                         "WF_VERDICT_WAIT_S": "3"})
    person = await nats.connect(system.client_url)
    operator = await nats.connect(system.operator_url)
    admin = await nats.connect(system.url)
    [policy] = processes(system.proc.pid)["policy"]
    try:
        os.kill(policy, signal.SIGSTOP)
        try:
            # the client fills its own share: its third request is refused at once, naming its limit
            mine = [asyncio.ensure_future(client.submit(person, SLEEP_BODY, attempts=1)) for _ in range(3)]
            await asyncio.wait(mine, timeout=2, return_when=asyncio.FIRST_COMPLETED)
            assert [task for task in mine if task.done()] == [mine[2]], "only the third, refused at once"
            with pytest.raises(client.WfError) as refused:
                await mine[2]
            name = urlsplit(system.client_url).username
            assert refused.value.code == 429
            assert f"from you ({name})" in refused.value.message
            assert "WF_MAX_IN_FLIGHT_PER_CALLER" in refused.value.message

            # the operator (another person) is served meanwhile: both its submits are taken in
            theirs = [asyncio.ensure_future(client.submit(operator, SLEEP_BODY, attempts=1)) for _ in range(2)]
            await asyncio.wait(theirs, timeout=0.5)
            assert not any(task.done() for task in theirs), "the operator's submits were taken in, not refused"

            # now every place is taken (2 + 2 of 4): anyone else meets everyone's limit, and is told so
            with pytest.raises(client.WfError) as full:
                await client.submit(admin, SLEEP_BODY, attempts=1)
            assert full.value.code == 429
            assert "from everyone" in full.value.message and "(WF_MAX_IN_FLIGHT)" in full.value.message

            replies = await asyncio.gather(*mine[:2], *theirs)
            assert [reply["verdict"] for reply in replies] == ["pending"] * 4
        finally:
            os.kill(policy, signal.SIGCONT)
        # the places were given back: the client is served again
        assert (await client.submit(person, SLEEP_BODY, attempts=1))["verdict"] in ("approved", "pending")
    finally:
        for nc in (person, operator, admin):
            await nc.close()
        assert system.stop() == 0, system.log_tail()


async def test_a_small_workflow_started_after_a_hog_of_long_jobs_finds_runner_slots(tmp_path):
    """One runner of 4 slots: the hog (40 jobs of an hour, rate_limit 1000) gets at most half of them,
    so a small workflow submitted after it runs at once and completes while the hog still runs.
    Without the share (WF_MAX_JOBS_IN_FLIGHT_PER_WORKFLOW=1000) the hog's commands take all 4 slots
    and fill the FIFO work queue ahead of the small one's, which then waits for an hour."""
    system = start_system(tmp_path, "--runners", "1", env={"WF_RUNNER_CONCURRENCY": "4"})
    person = await nats.connect(system.client_url)
    admin = await nats.connect(system.url)  # to look into WF_JOBS, which people cannot see
    js = admin.jetstream()
    try:
        hog = (await client.submit(person, sleeps(40, 3600, 1000, "hog")))["id"]
        await client.execute(person, hog)

        async def hog_running():  # type: ignore[no-untyped-def]
            status = await client.status(person, hog)
            running = [job for job in status["blocks"][0]["jobs"] if job["status"] == "running"]
            return running if len(running) >= 2 else None

        await eventually(hog_running, 20, what="the hog's first jobs running")
        # its share of the 4 slots: 2 commands dispatched (running), nothing of it queued behind them
        info = await js.stream_info("WF_JOBS", subjects_filter=f"wf.cmd.job.{hog}.>")
        assert info.state.messages == 2, info.state

        started = time.monotonic()
        small = (await client.submit(person, sleeps(2, 1, 2, "small")))["id"]
        await client.execute(person, small)
        final = await wait_terminal(person, small, timeout_s=20)
        took = time.monotonic() - started
        assert final["status"] == "completed", final
        print(f"\nsmall workflow after the hog: completed {took:.1f} s after its submit")

        status = await client.status(person, hog)
        assert status["status"] == "running"
        jobs = status["blocks"][0]["jobs"]
        assert sum(job["status"] == "running" for job in jobs) == 2
        assert sum(job["status"] == "not_started" for job in jobs) == 38

        # cancel still ends the hog at once, its running jobs cancelled on the runner
        cancelled = time.monotonic()
        await client.cancel(person, hog)
        ended = await wait_terminal(person, hog, timeout_s=10)
        print(f"hog cancelled: ended {time.monotonic() - cancelled:.2f} s after the cancel request")
        assert ended["status"] == "failed"

        async def hog_commands_gone():  # type: ignore[no-untyped-def]
            info = await js.stream_info("WF_JOBS", subjects_filter=f"wf.cmd.job.{hog}.>")
            return info.state.messages == 0

        await eventually(hog_commands_gone, 10, what="the hog's cancelled commands to leave the work queue")
    finally:
        await person.close()
        await admin.close()
        assert system.stop() == 0, system.log_tail()
