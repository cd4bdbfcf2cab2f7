"""The chaos suite: real workflows, one fault each (kill -9 of a real process, a network cut, replayed
messages, a cluster node lost), then the invariants of harness.check_invariants."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import nats
import nats.js.errors
import pytest

from schemas import Approved, ExecRequested, JobCommand, WorkflowEnded, encoder, event_decoder, subjects
from services.common.bus import read_history
from services.common.topology import EVENTS_STREAM, LEASES_BUCKET
from tests.conftest import REPO, RunningSystem, eventually, processes, start_system, wait_for_port
from wf import client, launch
from wf.up import find_nats_server, free_port

from .harness import (
    TcpProxy,
    assert_clean,
    check_invariants,
    instances,
    job_started,
    kill9,
    kill_role,
    restarted,
    role_url,
    run_workflows,
    sleep_workreq,
    start_service,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

# sleep jobs of 5 s at time scale 0.2: each job runs 1 s, so every fault lands mid-job
TIME_SCALE = "0.2"


@pytest.fixture
def systems(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Start systems with `start(*args)`; each is stopped (and must stop cleanly) at the end."""
    started: list[RunningSystem] = []

    def start(*args: str, env: dict[str, str] | None = None) -> RunningSystem:
        home = tmp_path / f"s{len(started)}"
        home.mkdir()
        system = start_system(home, "--time-scale", TIME_SCALE, *args, env=env)
        started.append(system)
        return system

    yield start
    for system in started:
        assert system.stop() == 0, system.log_tail()


async def _admin(system: RunningSystem) -> nats.aio.client.Client:
    return await nats.connect(system.url, max_reconnect_attempts=-1, reconnect_time_wait=0.25)


@pytest.mark.parametrize("runners", [1, 3])
async def test_kill_runner_mid_job(systems, runners: int) -> None:  # type: ignore[no-untyped-def]
    """Fault 1: the job the runner was running is redelivered after the ack wait and runs again
    (at-least-once); everything else runs once, and every workflow completes."""
    system = systems("--runners", str(runners))
    nc = await _admin(system)
    try:
        wf_ids = await run_workflows(nc, 3, blocks=2, jobs=3)
        await job_started(nc, wf_ids)
        pid = await kill_role(system, "jobrunner")
        await restarted(system, "jobrunner", pid, count=runners)
        report = await check_invariants(nc, wf_ids, reruns_allowed=True)
        assert_clean(report, system)
        if runners == 1:  # the only runner was mid-job: that job ran again
            assert report.reruns >= 1, system.log_tail()
    finally:
        await nc.close()


@pytest.mark.parametrize("executors", [1, 2])
async def test_kill_executor_mid_block(systems, executors: int) -> None:  # type: ignore[no-untyped-def]
    """Fault 2: the owner of a workflow dies; its restart (or the other replica) takes the lease
    over, rebuilds from WF_EVENTS and the work queue, and nothing is dispatched twice."""
    system = systems("--executors", str(executors))
    nc = await _admin(system)
    try:
        wf_ids = await run_workflows(nc, 4, blocks=3, jobs=4)
        await job_started(nc, wf_ids)
        leases = await nc.jetstream().key_value(LEASES_BUCKET)
        owner = json.loads((await leases.get(wf_ids[0])).value)
        assert owner["pid"] in processes(system.proc.pid)["executor"]
        kill9(owner["pid"])
        killed_at = time.monotonic()

        async def new_owner() -> bool:
            try:
                entry = await leases.get(wf_ids[0])
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                return False
            return bool(entry.value) and json.loads(entry.value)["pid"] != owner["pid"]

        await eventually(new_owner, 30, what="another executor to take the lease")
        print(f"\ntakeover with {executors} executor(s): {time.monotonic() - killed_at:.1f} s from kill -9 to the new lease")
        report = await check_invariants(nc, wf_ids, reruns_allowed=False)
        assert_clean(report, system)
        log = system.log_path.read_text()
        assert "workflow_resumed" in log, system.log_tail()
    finally:
        await nc.close()


async def test_kill_policy_with_submissions_in_flight(systems) -> None:  # type: ignore[no-untyped-def]
    """Fault 3: submits racing the kill, and made while it is down, all get their verdict once it is back."""
    system = systems(env={"WF_VERDICT_WAIT_S": "0.2"})  # a submit answers `pending` rather than wait it out
    nc = await _admin(system)
    try:
        early = [asyncio.create_task(client.submit(nc, sleep_workreq(blocks=1, jobs=2))) for _ in range(5)]
        pid = await kill_role(system, "policy")
        killed_at = time.monotonic()
        during = [asyncio.create_task(client.submit(nc, sleep_workreq(blocks=1, jobs=2))) for _ in range(5)]
        replies = await asyncio.gather(*early, *during)
        await restarted(system, "policy", pid)
        await eventually(lambda: instances(nc, "wf-policy"), 30, what="wf-policy answering")
        print(f"\npolicy kill -9: answering again {time.monotonic() - killed_at:.1f} s after the kill")
        wf_ids = [reply["id"] for reply in replies]
        assert len(set(wf_ids)) == 10
        assert any(reply["verdict"] == "pending" for reply in replies), "no submission waited for the policy"

        async def all_approved() -> bool:
            statuses = [await client.status(nc, wf_id) for wf_id in wf_ids]
            return all(status["verdict"] == "approved" for status in statuses)

        await eventually(all_approved, 60, what="every verdict after the policy came back")
        for wf_id in wf_ids:
            await client.execute(nc, wf_id)
        assert_clean(await check_invariants(nc, wf_ids, reruns_allowed=False), system)
    finally:
        await nc.close()


async def test_kill_status_mid_workflow(systems) -> None:  # type: ignore[no-untyped-def]
    """Fault 4: after its restart the projection is complete and equal to a fresh fold."""
    system = systems()
    nc = await _admin(system)
    try:
        wf_ids = await run_workflows(nc, 3, blocks=3, jobs=3)
        await job_started(nc, wf_ids)
        pid = await kill_role(system, "status")
        killed_at = time.monotonic()
        await restarted(system, "status", pid)
        await eventually(lambda: instances(nc, "wf-status"), 30, what="wf-status answering")
        print(f"\nstatus kill -9: answering again after {time.monotonic() - killed_at:.1f} s")
        assert_clean(await check_invariants(nc, wf_ids, reruns_allowed=False), system)
    finally:
        await nc.close()


async def test_kill_nats_server_and_restart_on_same_store(systems) -> None:  # type: ignore[no-untyped-def]
    """Fault 5: every service reconnects and carries on; a submit made during the outage either
    fails with a clear error or its workflow exists and runs: never a silent drop."""
    system = systems()
    nc = await _admin(system)
    try:
        wf_ids = await run_workflows(nc, 3, blocks=3, jobs=3)
        await job_started(nc, wf_ids)
        await kill_role(system, "nats-server")
        killed_at = time.monotonic()

        async def ready() -> bool:
            try:
                counts = await asyncio.gather(*(instances(nc, f"wf-{s}") for s in
                                                ("intake", "policy", "executor", "jobrunner", "status")))
            except nats.errors.Error:
                return False
            return all(counts)

        async def back() -> float:
            await asyncio.sleep(0.5)  # past the kill: the old connections are gone
            await eventually(ready, 60, what="every service back")
            return time.monotonic() - killed_at

        back_after = asyncio.create_task(back())
        outcomes = await asyncio.gather(
            *(client.submit(nc, sleep_workreq(blocks=1, jobs=2)) for _ in range(5)), return_exceptions=True
        )
        for outcome in outcomes:  # an answer, or a clear error: nothing else
            assert isinstance(outcome, dict | client.WfError | client.Unreachable), repr(outcome)
            if isinstance(outcome, client.WfError):
                assert outcome.code == 503, outcome
        accepted = [o["id"] for o in outcomes if isinstance(o, dict)]
        print(f"\nnats-server kill -9: every service answering again after {await back_after:.1f} s; "
              f"{len(accepted)} of 5 submits made during the outage accepted")
        for wf_id in accepted:
            await eventually(lambda wf_id=wf_id: _verdict(nc, wf_id), 30, what=f"verdict of {wf_id}")
            await client.execute(nc, wf_id)
        assert_clean(await check_invariants(nc, wf_ids + accepted, reruns_allowed=True), system)
    finally:
        await nc.close()


async def _verdict(nc, wf_id: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        return (await client.status(nc, wf_id))["verdict"] == "approved"
    except client.Unreachable:
        return False


@pytest.mark.parametrize("cut", ["stall", "drop"])
async def test_network_cut_between_executor_and_nats(systems, tmp_path: Path, cut: str) -> None:  # type: ignore[no-untyped-def]
    """Fault 6: the executor that owns the workflows loses NATS (a proxy stalls or drops its
    traffic) for longer than the ack wait; a second executor takes the leases over and finishes the
    work; when the cut heals, the first finds its leases taken and stops without dispatching."""
    system = systems("--scale", "executor=0")
    nc = await _admin(system)
    proxy = TcpProxy(int(system.url.rpartition(":")[2]))
    await proxy.start()
    cut_off = start_service("executor", role_url(system, "admin", f"127.0.0.1:{proxy.port}"),
                            tmp_path / "executor-cut.log", float(TIME_SCALE))
    backup = None
    try:
        await eventually(lambda: instances(nc, "wf-executor"), 30, what="the proxied executor")
        wf_ids = await run_workflows(nc, 3, blocks=4, jobs=3)
        await job_started(nc, wf_ids)
        backup = start_service("executor", role_url(system, "admin"), tmp_path / "executor-backup.log",
                               float(TIME_SCALE))
        await eventually(lambda: _count_is(nc, 2), 30, what="the backup executor")
        getattr(proxy, cut)()
        # the cut lasts until the backup has taken over (which takes longer than the 6 s ack wait)
        await eventually(lambda: _log_has(backup.log_path, "workflow_resumed"), 40, what="the takeover")
        proxy.heal()
        report = await check_invariants(nc, wf_ids, reruns_allowed=False)
        assert_clean(report, system)
        await eventually(lambda: _log_has(cut_off.log_path, "lease_taken_over"), 30,
                         what="the cut-off executor to see its lease taken")
    finally:
        await proxy.close()
        cut_off.stop()
        if backup is not None:
            backup.stop()
        await nc.close()


async def _count_is(nc, n: int) -> bool:  # type: ignore[no-untyped-def]
    return await instances(nc, "wf-executor") == n


async def _log_has(path: Path, text: str) -> bool:
    return text in path.read_text(errors="replace")


async def test_replayed_events_and_commands(systems) -> None:  # type: ignore[no-untyped-def]
    """Fault 7: copies of a running workflow's events, its exec request, and the commands of its
    finished block are injected straight into the streams (new message ids, so JetStream's
    duplicate window does not catch them): the projection, executor and runners ignore them."""
    system = systems()
    nc = await _admin(system)
    js = nc.jetstream()
    try:
        wf_ids = await run_workflows(nc, 2, blocks=3, jobs=3)

        async def first_block_done() -> bool:
            return (await client.status(nc, wf_ids[0]))["blocks"][0]["status"] == "completed"

        await eventually(first_block_done, 30, what="block 0 to end")
        injected: set[int] = set()
        history = await read_history(js, wf_ids[0])
        for msg in history:  # every event so far, again, as a replay would bring it
            ack = await js.publish(msg.subject, msg.data, headers={"Nats-Msg-Id": f"replay-{msg.metadata.sequence.stream}"})
            injected.add(ack.seq)
        for msg in history:  # and with their own ids: the duplicate window drops those
            original_id = (msg.headers or {})["Nats-Msg-Id"]
            assert (await js.publish(msg.subject, msg.data, headers={"Nats-Msg-Id": original_id})).duplicate
        for job in range(3):  # the commands of block 0, whose jobs all completed
            submitted = event_decoder.decode(history[0].data)
            spec = submitted.req.blocks[0].jobs[job]  # type: ignore[union-attr]
            cmd = JobCommand(id=wf_ids[0], block=0, job=job, name=spec.name, args=spec.args, at=0.0,
                             workreq=submitted.req.name)  # type: ignore[union-attr]
            await js.publish(subjects.job_command(wf_ids[0], 0, job), encoder.encode(cmd),
                             headers={"Nats-Msg-Id": f"replay-cmd-{job}"})
        report = await check_invariants(nc, wf_ids, reruns_allowed=False, ignore_seqs=frozenset(injected))
        assert_clean(report, system)
        after = [m for m in await read_history(js, wf_ids[0]) if m.metadata.sequence.stream not in injected]
        for kind in (Approved, ExecRequested, WorkflowEnded):  # the replayed submission was not decided again, etc.
            assert sum(isinstance(event_decoder.decode(m.data), kind) for m in after) == 1, kind.__name__
        assert "already_ended" in system.log_path.read_text(), "the runners never saw the replayed commands"
    finally:
        await nc.close()


async def test_three_node_cluster_loses_a_node(tmp_path: Path) -> None:
    """Fault 8: a 3-node NATS cluster on loopback, streams and buckets R3; kill -9 the node that
    leads WF_EVENTS mid-workflow: the services move to the other nodes and the work completes."""
    binary = find_nats_server(None)
    ports = [(free_port(), free_port()) for _ in range(3)]
    routes = ", ".join(f"nats://127.0.0.1:{cport}" for _, cport in ports)
    nodes: dict[str, subprocess.Popen] = {}  # type: ignore[type-arg]
    for n, (port, cport) in enumerate(ports):
        conf = tmp_path / f"n{n}.conf"
        conf.write_text(f"server_name: n{n}\nlisten: 127.0.0.1:{port}\n"
                        f"jetstream {{ store_dir: {json.dumps(str(tmp_path / f'js{n}'))} }}\n"
                        f"cluster {{ name: wfc, listen: 127.0.0.1:{cport}, routes: [{routes}] }}\n")
        nodes[f"n{n}"] = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for port, _ in ports:
        assert wait_for_port(port), f"cluster node on {port} did not start"
    url = ",".join(f"nats://127.0.0.1:{port}" for port, _ in ports)
    log_path = tmp_path / "wf-up.log"
    up = launch.start(tmp_path / "data", "--stream-replicas", "3", "--time-scale", TIME_SCALE, "--runners", "2",
                      "--executors", "2", log_path=log_path, nats_url=url, config_dir=REPO / "configs", cwd=tmp_path,
                      with_parent=False)
    system = RunningSystem(up.proc, tmp_path / "data", log_path, url)
    nc = None
    try:
        await up.ready(90)
        nc = await nats.connect(url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.25)
        js = nc.jetstream()
        info = await js.stream_info(EVENTS_STREAM)
        assert info.config.num_replicas == 3
        wf_ids = await run_workflows(nc, 3, blocks=3, jobs=3)
        await job_started(nc, wf_ids)
        leader = (await js.stream_info(EVENTS_STREAM)).cluster.leader  # type: ignore[union-attr]
        kill9(nodes[leader].pid)
        report = await check_invariants(nc, wf_ids, reruns_allowed=True)
        assert_clean(report, system)
    finally:
        if nc is not None:
            await nc.close()
        assert system.stop() == 0, system.log_tail()
        for node in nodes.values():
            node.terminate()
            node.wait(timeout=10)
