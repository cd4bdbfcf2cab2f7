"""Pause and resume through the bus: one workflow (`wf.api.pause` / `wf.api.resume`, `wf pause`,
`wf resume`) and every workflow of a name (`pause` in `wf_es`, `wf es pause`). Paused: nothing new
dispatched, the running jobs finish and are recorded; resume goes on at the same rate limit; stop
and cancel win over pause."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import nats
import pytest

from schemas import JobCompleted, JobStarted, Paused, Resumed, WorkflowEnded, event_decoder
from services.common.bus import last_event, read_history
from tests.conftest import REPO, eventually, start_system
from wf import client
from wf.client import WfError

pytestmark = pytest.mark.integration
NAME = "PauseTest"
ES_NAME = "PauseEsTest"
STOP_NAME = "PauseStopTest"


@pytest.fixture(scope="module")
def pause_system(tmp_path_factory):
    """Real durations (time scale 1): a job still running when the workflow is paused truly runs on."""
    tmp = tmp_path_factory.mktemp("pause")
    config_dir = tmp / "configs"
    shutil.copytree(REPO / "configs", config_dir)
    with open(config_dir / "policies.json", "a") as fh:
        for name in (NAME, ES_NAME, STOP_NAME):
            fh.write(json.dumps({"Name": name, "Policies": [{"Name": "restrictJobTypes",
                                                              "Settings": {"AllowedJobs": ["sleep"]}}]}) + "\n")
    with open(config_dir / "es.json", "a") as fh:
        for name in (NAME, ES_NAME, STOP_NAME):
            fh.write(json.dumps({"Name": name, "Status": "go"}) + "\n")
    system = start_system(tmp, "--time-scale", "1", "--runners", "2", config_dir=config_dir)
    yield system
    assert system.stop() == 0, system.log_tail()


@pytest.fixture
async def pnc(pause_system):
    nc = await nats.connect(pause_system.url)
    yield nc
    await nc.close()


def sleeps(name: str, count: int, seconds: float, rate_limit: int = 1) -> bytes:
    return json.dumps({"name": name, "blocks": [
        {"rate_limit": rate_limit, "jobs": [{"name": "sleep", "args": {"seconds": str(seconds)}} for _ in range(count)]}
    ]}).encode()


async def start(nc, body: bytes) -> str:
    reply = await client.submit(nc, body)
    assert reply["verdict"] == "approved"
    await client.execute(nc, reply["id"])
    return reply["id"]


async def job_state(nc, wf_id: str, job: int, state: str) -> bool:
    return await last_event(nc.jetstream(), f"wf.evt.{wf_id}.job.0.{job}.{state}") is not None


async def started_jobs(nc, wf_id: str) -> list[int]:
    return sorted(ev.job for ev in await events(nc, wf_id) if isinstance(ev, JobStarted))


async def events(nc, wf_id: str) -> list:
    return [event_decoder.decode(m.data) for m in await read_history(nc.jetstream(), wf_id)]


async def status_is(nc, wf_id: str, state: str) -> dict | None:
    status = await client.status(nc, wf_id)
    return status if status["status"] == state else None


def wf_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WF_NATS_URL": url}
    return subprocess.run([sys.executable, "-m", "wf.cli", *args], capture_output=True, text=True, env=env,
                          timeout=60, cwd=REPO)


async def test_a_paused_workflow_finishes_its_running_job_starts_nothing_new_and_resume_completes_it(pause_system, pnc):
    """Rate limit 1, jobs of 2 s: paused while job 0 runs, job 0 completes and job 1 never starts
    until resume; pause-resume-pause-resume works; status `paused` with the person who paused it."""
    people = await nats.connect(pause_system.client_url), await nats.connect(pause_system.operator_url)
    alice, bob = people
    try:
        wf_id = await start(alice, sleeps(NAME, 3, 2))
        await eventually(lambda wf_id=wf_id: job_state(pnc, wf_id, 0, "started"), what="job 0 running")
        assert await client.pause(alice, wf_id) == {"id": wf_id}
        status = await eventually(lambda: status_is(pnc, wf_id, "paused"), 5, what="status paused")
        assert status["paused_by"] == "client"
        with pytest.raises(WfError) as again:
            await client.pause(bob, wf_id)
        assert again.value.code == 409 and "already paused" in str(again.value)
        await eventually(lambda wf_id=wf_id: job_state(pnc, wf_id, 0, "completed"), 10, what="the running job to complete")
        # 2.5 s more (longer than a job): nothing new started, still paused
        for _ in range(25):
            assert await started_jobs(pnc, wf_id) == [0]
            await asyncio.sleep(0.1)
        status = await client.status(pnc, wf_id)
        assert status["status"] == "paused" and status["blocks"][0]["jobs"][0]["status"] == "completed"
        assert [j["status"] for j in status["blocks"][0]["jobs"][1:]] == ["not_started", "not_started"]

        assert await client.resume(bob, wf_id) == {"id": wf_id}
        with pytest.raises(WfError) as not_paused:
            await client.resume(bob, wf_id)
        assert not_paused.value.code == 409 and "not paused" in str(not_paused.value)
        await eventually(lambda: job_state(pnc, wf_id, 1, "started"), 5, what="job 1 to start after resume")
        status = await eventually(lambda: status_is(pnc, wf_id, "running"), 5, what="status running again")
        assert status["paused_by"] == ""

        # pause again (a second pause, its own event), then resume again: it completes
        await client.pause(bob, wf_id)
        status = await eventually(lambda: status_is(pnc, wf_id, "paused"), 5, what="paused again")
        assert status["paused_by"] == "operator"
        await eventually(lambda: job_state(pnc, wf_id, 1, "completed"), 10, what="job 1 to complete")
        assert await started_jobs(pnc, wf_id) == [0, 1]
        await client.resume(alice, wf_id)
        final = await eventually(lambda wf_id=wf_id: status_is(pnc, wf_id, "completed"), 20, what="completed")
        assert final["paused_by"] == "" and not final["had_errors"]

        history = await events(pnc, wf_id)
        pauses = [(type(ev).__name__, ev.n, ev.by) for ev in history if isinstance(ev, Paused | Resumed)]
        assert pauses == [("Paused", 1, "client"), ("Resumed", 1, "operator"), ("Paused", 2, "operator"),
                          ("Resumed", 2, "client")]
        # job 1 started only after the first resume, job 2 only after the second
        order = [(type(ev).__name__, getattr(ev, "job", None)) for ev in history
                 if isinstance(ev, Paused | Resumed | JobStarted | JobCompleted)]
        assert order.index(("JobStarted", 1)) > order.index(("Resumed", None))
        assert order.index(("JobStarted", 2)) > len(order) - 1 - order[::-1].index(("Resumed", None))
        ended = next(ev for ev in history if isinstance(ev, WorkflowEnded))
        assert ended.status == "completed"

        # the CLI: history shows who paused and resumed; pause of an ended workflow is a 409
        shown = wf_cli(pause_system.client_url, "history", wf_id)
        assert shown.returncode == 0, shown.stderr
        assert [line.split()[1:3] for line in shown.stdout.splitlines() if line.split()[1] in ("paused", "resumed")] == [
            ["paused", "client"], ["resumed", "operator"], ["paused", "operator"], ["resumed", "client"]]
        refused = wf_cli(pause_system.client_url, "pause", wf_id)
        assert refused.returncode != 0 and "already ended" in refused.stderr
    finally:
        for nc in people:
            await nc.close()


async def test_pause_and_resume_errors_and_the_cli(pause_system, pnc):
    with pytest.raises(WfError) as unknown:
        await client.pause(pnc, "01NOSUCHWORKFLOW0000000000")
    assert unknown.value.code == 404
    with pytest.raises(WfError) as unknown:
        await client.resume(pnc, "01NOSUCHWORKFLOW0000000000")
    assert unknown.value.code == 404
    reply = await client.submit(pnc, sleeps(NAME, 1, 1))
    with pytest.raises(WfError) as not_running:
        await client.pause(pnc, reply["id"])  # approved, never executed
    assert not_running.value.code == 409 and "not running" in str(not_running.value)

    wf_id = await start(pnc, sleeps(NAME, 2, 2))
    done = wf_cli(pause_system.client_url, "pause", wf_id)
    assert done.returncode == 0 and done.stdout.strip() == wf_id, done.stderr
    shown = wf_cli(pause_system.client_url, "status", wf_id)
    assert "status=paused" in shown.stdout and "paused by client" in shown.stdout, shown.stdout
    listed = wf_cli(pause_system.client_url, "ls", "--paused", "--json")
    assert wf_id in listed.stdout, listed.stdout + listed.stderr
    done = wf_cli(pause_system.client_url, "resume", wf_id)
    assert done.returncode == 0 and done.stdout.strip() == wf_id, done.stderr
    await eventually(lambda: status_is(pnc, wf_id, "completed"), 20, what="completed")


async def test_cancel_and_stop_win_over_pause(pause_system, pnc):
    kv = await pnc.jetstream().key_value("wf_es")
    # cancel of a paused workflow ends it at once
    wf_id = await start(pnc, sleeps(NAME, 3, 30))
    await eventually(lambda wf_id=wf_id: job_state(pnc, wf_id, 0, "started"), what="job 0 running")
    await client.pause(pnc, wf_id)
    await client.cancel(pnc, wf_id)
    final = await eventually(lambda: status_is(pnc, wf_id, "failed"), 10, what="cancelled")
    assert final["cancelled_by"] and final["paused_by"] == ""
    with pytest.raises(WfError) as ended:
        await client.resume(pnc, wf_id)
    assert ended.value.code == 409

    # an emergency stop of a paused workflow's name ends it, its running job cancelled
    wf_id = await start(pnc, sleeps(STOP_NAME, 3, 30))
    await eventually(lambda wf_id=wf_id: job_state(pnc, wf_id, 0, "started"), what="job 0 running")
    await client.pause(pnc, wf_id)
    await eventually(lambda: status_is(pnc, wf_id, "paused"), 5, what="paused")
    await kv.put(STOP_NAME, b"stop")
    try:
        final = await eventually(lambda: status_is(pnc, wf_id, "failed"), 10, what="stopped")
        assert final["was_es_stopped"] and final["blocks"][0]["jobs"][0]["error"] == "cancelled: emergency stop"

        # `pause` in wf_es, then `stop`: stop wins too
        await kv.put(STOP_NAME, b"go")
        wf_id = await start(pnc, sleeps(STOP_NAME, 3, 30))
        await eventually(lambda wf_id=wf_id: job_state(pnc, wf_id, 0, "started"), what="job 0 running")
        await kv.put(STOP_NAME, b"pause")
        await kv.put(STOP_NAME, b"stop")
        final = await eventually(lambda: status_is(pnc, wf_id, "failed"), 10, what="stopped")
        assert final["was_es_stopped"]
    finally:
        await kv.put(STOP_NAME, b"go")


async def test_an_emergency_pause_holds_every_workflow_of_its_name_until_go(pause_system, pnc):
    """`wf es pause NAME`: the running jobs finish, nothing new starts, submit and exec get 423,
    other names run on; `go` resumes every one of them to completion."""
    ids = [await start(pnc, sleeps(ES_NAME, 3, 2)) for _ in range(2)]
    for wf_id in ids:
        await eventually(lambda wf_id=wf_id: job_state(pnc, wf_id, 0, "started"), what="job 0 running")
    done = wf_cli(pause_system.operator_url, "es", "pause", ES_NAME, "--why", "maintenance window")
    assert done.returncode == 0, done.stderr
    kv = await pnc.jetstream().key_value("wf_es")
    try:
        assert (await kv.get(ES_NAME)).value == b"pause"
        for wf_id in ids:
            await eventually(lambda wf_id=wf_id: job_state(pnc, wf_id, 0, "completed"), 10, what="the running job to complete")
        with pytest.raises(WfError) as refused:
            await client.submit(pnc, sleeps(ES_NAME, 1, 1))
        assert refused.value.code == 423 and "pause" in str(refused.value)
        other = await start(pnc, sleeps(NAME, 1, 1))  # another name runs on
        await eventually(lambda: status_is(pnc, other, "completed"), 10, what="another name's workflow")
        for _ in range(25):  # 2.5 s, more than a job: nothing new started
            for wf_id in ids:
                assert await started_jobs(pnc, wf_id) == [0]
            await asyncio.sleep(0.1)
        shown = wf_cli(pause_system.operator_url, "es", "show")
        assert any(line.startswith(f"{ES_NAME} pause") for line in shown.stdout.splitlines()), shown.stdout
        done = wf_cli(pause_system.operator_url, "es", "go", ES_NAME)
        assert done.returncode == 0, done.stderr
        for wf_id in ids:
            final = await eventually(lambda wf_id=wf_id: status_is(pnc, wf_id, "completed"), 20, what="completed after go")
            assert not final["had_errors"]
    finally:
        await kv.put(ES_NAME, b"go")
