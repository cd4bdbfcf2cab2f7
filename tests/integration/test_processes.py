"""`wf up` as a supervisor: clean stop, restarts, and a workflow that survives its executor's death."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import nats.errors
import pytest

from schemas import JobCompleted, JobStarted, event_decoder
from services.common.bus import read_history
from services.common.ids import id_time_s
from tests.conftest import REPO, descendants, eventually, processes, start_system, wait_terminal
from wf import client, launch
from wf.up import find_nats_server, free_port

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def pid_of(system, service: str) -> int:
    pids = processes(system.proc.pid).get(service)
    assert pids, f"no {service} process under wf up"
    return pids[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_stops_everything_and_exits_0(tmp_path, sig):
    system = start_system(tmp_path, "--runners", "2")
    children = descendants(system.proc.pid)
    assert len(children) >= 7  # nats-server, four services, two runners
    system.proc.send_signal(sig)
    assert system.proc.wait(timeout=30) == 0
    left = [pid for pid in children if alive(pid)]
    assert not left, f"processes left behind: {left}"
    assert not (system.data_dir / "client.env").exists(), "client.env must not outlive the system"


async def test_even_kill_9_of_wf_up_takes_its_children_with_it(tmp_path):
    system = start_system(tmp_path)
    children = descendants(system.proc.pid)
    system.proc.kill()
    system.proc.wait(timeout=10)

    async def all_gone():
        return not [pid for pid in children if alive(pid)]

    await eventually(all_gone, 15, what="every child of a killed wf up to exit")


async def test_a_killed_service_is_restarted(tmp_path):
    system = start_system(tmp_path)
    try:
        old = pid_of(system, "intake")
        os.kill(old, signal.SIGKILL)

        async def restarted():
            try:
                return pid_of(system, "intake") != old
            except AssertionError:
                return False

        await eventually(restarted, 15, what="a new intake process")
        nc = await nats.connect(system.url)
        try:
            async def submits():
                try:
                    return await client.submit(nc, (REPO / "examples" / "sleep.json").read_bytes())
                except (TimeoutError, client.WfError, client.Unreachable, nats.errors.Error):  # restarting
                    return None

            assert (await eventually(submits, 15, what="intake to answer again"))["verdict"] == "approved"
        finally:
            await nc.close()
    finally:
        assert system.stop() == 0


async def test_a_workflow_survives_its_executor_being_killed_mid_block(tmp_path):
    """kill -9 the executor while a block runs: the restarted executor resumes from WF_EVENTS."""
    system = start_system(tmp_path, "--time-scale", "0.1", "--runners", "2")
    nc = await nats.connect(system.url)
    try:
        body = {"name": "SleepDemo", "blocks": [
            {"rate_limit": 2, "jobs": [{"name": "sleep", "args": {"seconds": "1"}}] * 6},
            {"rate_limit": 3, "jobs": [{"name": "sleep", "args": {"seconds": "1"}}] * 3},
        ]}
        reply = await client.submit(nc, json.dumps(body).encode())
        await client.execute(nc, reply["id"])
        wf_id = reply["id"]
        js = nc.jetstream()

        async def two_jobs_done():
            events = [event_decoder.decode(m.data) for m in await read_history(js, wf_id)]
            return sum(isinstance(e, JobCompleted) for e in events) >= 2

        await eventually(two_jobs_done, what="two jobs to complete")
        os.kill(pid_of(system, "executor"), signal.SIGKILL)

        status = await wait_terminal(nc, wf_id, 40)  # after the executor's death
        assert status["status"] == "completed"
        assert all(j["status"] == "completed" for b in status["blocks"] for j in b["jobs"])
        events = [event_decoder.decode(m.data) for m in await read_history(js, wf_id)]
        completed = [(e.block, e.job) for e in events if isinstance(e, JobCompleted)]
        assert len(completed) == 9 and len(set(completed)) == 9, "a job completed twice or not at all"
        started = [(e.block, e.job) for e in events if isinstance(e, JobStarted)]
        assert len(started) == 9, "a job was dispatched again after the executor's restart"
        assert "workflow_resumed" in system.log_path.read_text()
    finally:
        await nc.close()
        assert system.stop() == 0


def test_the_cli_walkthrough(system, tmp_path):
    """README: `wf submit`, `wf exec`, `wf status --watch`, `wf status --json`, with client.env's URL."""
    env = {**os.environ, "WF_NATS_URL": ""}
    wf = [sys.executable, "-m", "wf.cli", "--data-dir", str(system.data_dir)]

    def run(*args, stdin=None):
        return subprocess.run([*wf, *args], capture_output=True, text=True, env=env, input=stdin, timeout=60)

    submitted = run("submit", str(REPO / "examples" / "sleep.json"))
    assert submitted.returncode == 0, submitted.stderr
    wf_id, verdict = submitted.stdout.split()
    assert verdict == "approved"
    assert run("exec", wf_id).stdout.strip() == wf_id
    again = run("exec", wf_id)
    assert again.returncode == 1 and "error 409" in again.stderr
    watched = run("status", wf_id, "--watch")
    assert watched.returncode == 0, watched.stderr
    assert f"{wf_id}  SleepDemo  verdict=approved  status=completed" in watched.stdout
    as_json = json.loads(run("status", wf_id, "--json").stdout)
    assert as_json["id"] == wf_id and as_json["status"] == "completed"

    listed = run("ls", "--limit", "50").stdout.splitlines()
    assert listed[0].split()[:2] == ["ID", "SUBMITTED"]
    mine = next(line for line in listed if line.startswith(wf_id))
    assert "SleepDemo" in mine and "completed" in mine and "9/9 done" in mine
    ids = [line.split()[0] for line in listed[1:]]
    assert ids == sorted(ids, reverse=True), "newest first"
    assert json.loads(run("ls", "--json", "--limit", "1").stdout)[0]["id"] == ids[0]
    cancelled_late = run("cancel", wf_id)
    assert cancelled_late.returncode == 1 and "error 409" in cancelled_late.stderr  # it already ended
    assert run("es", "go", "Nope").stdout.strip() == "Nope go"  # a name with no emergency-stop key is stopped
    shown = [line.split("  (by ")[0] for line in run("es", "show").stdout.splitlines()]
    assert "Nope go" in shown and "SleepDemo go" in shown and "SatelliteDiskErase go" in shown
    assert any(line.startswith("Nope go  (by operator at ") for line in run("es", "show").stdout.splitlines())
    rejected = run("submit", "-", stdin=json.dumps({"name": "Nope", "blocks": [{"jobs": [{"name": "sleep", "args": {"seconds": "1"}}]}]}))
    assert rejected.returncode == 1 and "error 400: no policy for WorkReq name 'Nope'" in rejected.stderr
    rejected_id = rejected.stdout.split()[0]
    watch_rejected = run("status", rejected_id, "--watch")
    assert watch_rejected.returncode == 1
    assert run("status", "01JZZZZZZZZZZZZZZZZZZZZZZZ").returncode == 1


async def test_a_submit_while_policy_is_stalled_is_pending_then_decided(tmp_path):
    """Also the seed's limits: 10 submits in flight, the rest 429 at once; exec past the window 412."""
    system = start_system(tmp_path, env={"WF_EXEC_WINDOW_S": "4"})
    policy = pid_of(system, "policy")
    nc = await nats.connect(system.url)
    sleep_body = (REPO / "examples" / "sleep.json").read_bytes()
    try:
        os.kill(policy, signal.SIGSTOP)
        try:
            results = await asyncio.gather(*(client.submit(nc, sleep_body, attempts=1) for _ in range(12)),
                                         return_exceptions=True)  # attempts=1: the raw 429s, not retried
            pending = [r for r in results if isinstance(r, dict) and r["verdict"] == "pending"]
            too_many = [r for r in results if isinstance(r, client.WfError) and r.code == 429]
            assert len(pending) == 10 and len(too_many) == 2, results
            reply = pending[0]
            with pytest.raises(client.WfError) as err:
                await client.execute(nc, reply["id"])
            assert err.value.code == 412 and "pending" in err.value.message
        finally:
            os.kill(policy, signal.SIGCONT)

        async def approved():
            return (await client.status(nc, reply["id"]))["verdict"] == "approved"

        await eventually(approved, what="the verdict after policy resumed")
        assert await client.execute(nc, reply["id"]) == {"id": reply["id"]}

        late = pending[1]["id"]  # approved by now too, but submitted over 4 s ago once this passes
        submitted_at = id_time_s(late)

        async def window_passed():
            return time.time() > submitted_at + 4.2

        await eventually(window_passed, what="the exec window to pass")
        with pytest.raises(client.WfError) as err:
            await client.execute(nc, late)
        assert err.value.code == 412 and "past the exec window of 4 s" in err.value.message
    finally:
        await nc.close()
        assert system.stop() == 0


async def test_wf_up_uses_an_external_server_with_nats_url(tmp_path):
    port = free_port()
    server = subprocess.Popen([find_nats_server(None), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"nats://127.0.0.1:{port}"
        data_dir = tmp_path / "data"
        up = launch.start(data_dir, "--time-scale", "0", log_path=tmp_path / "wf-up.log", nats_url=url,
                          config_dir=REPO / "configs", with_parent=False)
        proc = up.proc
        try:
            await up.ready(60)
            assert (data_dir / "client.env").read_text() == f"WF_NATS_URL={url}\n"
            nc = await nats.connect(url)
            try:
                reply = await client.submit(nc, (REPO / "examples" / "sleep.json").read_bytes())
                await client.execute(nc, reply["id"])

                assert (await wait_terminal(nc, reply["id"]))["status"] == "completed"
            finally:
                await nc.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        assert server.poll() is None, "wf up must leave a server it did not start running"
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_a_service_run_alone_joins_and_wf_ping_checks_that_very_instance(system, tmp_path):
    """`python -m services.status` beside a running system; the healthcheck compose uses."""
    id_file = tmp_path / "status.id"
    env = {**os.environ, "WF_NATS_URL": system.url, "WF_SERVICE_ID_FILE": str(id_file)}
    proc = subprocess.Popen([sys.executable, "-m", "services.status"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wf = [sys.executable, "-m", "wf.cli"]

    def ping(*args):
        return subprocess.run([*wf, "ping", *args], env=env, capture_output=True, text=True, timeout=30, check=False)

    try:
        async def written():
            return id_file.is_file() and id_file.read_text().strip()

        await eventually(written, what="the instance id file")
        assert ping("wf-status", "--id-file", str(id_file)).returncode == 0
        assert ping("wf-intake").returncode == 0
        missing = ping("wf-nothing", "--timeout", "0.5")
        assert missing.returncode == 1 and "wf-nothing did not answer" in missing.stderr
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    assert ping("wf-status", "--id-file", str(id_file), "--timeout", "0.5").returncode == 1  # that instance is gone
    assert ping("wf-status").returncode == 0  # the system's own wf-status still answers


def test_wf_setup_creates_the_topology_and_seeds_emergency_stops(nats_server):
    env = {**os.environ, "WF_NATS_URL": nats_server}
    done = subprocess.run([sys.executable, "-m", "wf.cli", "setup", "--config-dir", str(REPO / "configs")],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "streams, consumers and buckets are in place (replicas 1)" in done.stdout
    assert "SatelliteDiskErase go" in done.stdout and "SleepDemo go" in done.stdout


def test_the_cli_says_clearly_when_nobody_answers_even_a_large_workreq_sent_in_parts(nats_server, tmp_path):
    env = {**os.environ, "WF_NATS_URL": nats_server}
    job = {"name": "sleep", "args": {"seconds": "1"}}
    small = json.dumps({"name": "SleepDemo", "blocks": [{"jobs": [job]}]})
    large = json.dumps({"name": "SleepDemo", "blocks": [{"jobs": [job] * 1000}] * 25})  # > 1 MB, the default max payload

    def submit(body):
        return subprocess.run([sys.executable, "-m", "wf.cli", "submit", "-"], input=body, env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    nobody = submit(small)
    nobody_said = "; is `wf up` running? start it, or point WF_NATS_URL at the server it runs"
    assert nobody.returncode == 1 and nobody.stderr.strip() == "wf: no service answers wf.api.submit" + nobody_said
    large_nobody = submit(large)  # over the server's 1 MB: wf sends it in parts, to wf.api.upload first
    assert large_nobody.returncode == 1
    assert large_nobody.stderr.strip() == "wf: no service answers wf.api.upload" + nobody_said
