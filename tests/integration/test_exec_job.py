"""The `exec` job in the real system (a real nats-server, `wf up`, its runners as separate
processes): a command that prints and succeeds, one that fails, a secret redacted everywhere, and a
cancel or an emergency stop mid-run that leaves no process of the command's tree running."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import nats
import pytest

from schemas import JobFailed, JobStarted, event_decoder
from services.common.bus import last_event, read_history
from tests.conftest import configs_with, eventually, start_system
from tests.procs import alive, in_session
from wf import client
from wf.client import WfError

pytestmark = pytest.mark.integration
NAME = "ExecTest"
ES_NAME = "ExecEsTest"
SECRET = "Exec-s3cr3t-Value"


@pytest.fixture(scope="module")
def exec_system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exec")
    allow = {"Name": "allowCommands", "Settings": {"Commands": [
        {"Program": "/bin/echo", "Args": ["*"]},
        {"Program": "/bin/sh", "Args": ["*"], "Env": ["MODE", "TOKEN"]},
        # a secret passes only where a pattern names it (`*` never matches `secret:...`)
        {"Program": "/bin/sh", "Args": ["-c", "*", "sh", "secret:EXEC_TOKEN"], "Env": ["TOKEN"],
         "Secrets": ["EXEC_TOKEN"]},
    ]}}
    config_dir = configs_with(tmp, {NAME: [allow], ES_NAME: [allow]})
    system = start_system(tmp, "--time-scale", "1", "--runners", "2", config_dir=config_dir,
                          env={"WF_SECRET_EXEC_TOKEN": SECRET, "WF_EXEC_TEST_LEAK": "inherited"})
    yield system
    assert system.stop() == 0, system.log_tail()
    assert SECRET not in system.log_path.read_text(errors="replace"), "a secret value reached the log"


@pytest.fixture
async def enc(exec_system):
    nc = await nats.connect(exec_system.url)
    yield nc
    await nc.close()


def workreq(name: str, *jobs: dict) -> bytes:
    return json.dumps({"name": name, "blocks": [{"rate_limit": 1, "jobs": list(jobs)}]}).encode()


def sh(script: str, *extra: str, **args: str) -> dict:
    return {"name": "exec", "args": {"argv": json.dumps(["/bin/sh", "-c", script, "sh", *extra]), **args}}


async def start(nc, body: bytes) -> str:
    reply = await client.submit(nc, body)
    assert reply["verdict"] == "approved", reply
    await client.execute(nc, reply["id"])
    return reply["id"]


async def ended(nc, wf_id: str, timeout_s: float = 30) -> dict:
    async def probe():
        status = await client.status(nc, wf_id)
        return status if status["status"] in ("completed", "failed") else None

    return await eventually(probe, timeout_s, what=f"workflow {wf_id} to end")


def assert_all_gone(pids: list[int], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while any(alive(p) for p in pids) or in_session(pids[0]):
        if time.monotonic() > deadline:
            pytest.fail(f"still running {within_s} s after the job ended: {[p for p in pids if alive(p)]}")
        time.sleep(0.05)


# the command's tree: sh (leader), a sleep, a sh with its own sleep (a grandchild); each writes its
# pid to the file "$1"
TREE = """
echo $$ >> "$1"
sleep 300 &
echo $! >> "$1"
sh -c 'sleep 300 & echo $! >> "$1"; wait' sh "$1" &
echo $! >> "$1"
echo running
wait
"""
TREE_PIDS = 4


async def job_ended(nc, wf_id: str) -> dict:
    """The workflow and its job once both are recorded (a stopped workflow may end before its
    cancelled job's failure arrives from the runner)."""
    async def probe():
        status = await client.status(nc, wf_id)
        job = status["blocks"][0]["jobs"][0]
        return (status, job) if status["status"] in ("completed", "failed") and job["status"] != "running" else None

    return await eventually(probe, 20, what=f"workflow {wf_id} and its job to end")


async def pids_in(path: Path, count: int) -> list[int]:
    async def probe():
        lines = path.read_text().split() if path.exists() else []
        return [int(p) for p in lines] if len(lines) >= count else None

    return await eventually(probe, 20, what=f"{count} pids in {path}")


async def test_a_command_that_prints_and_succeeds(exec_system, enc):
    wf_id = await start(enc, workreq(NAME, {"name": "exec", "args": {"argv": '["/bin/echo", "hello", "from exec"]'}},
                                     sh('echo "mode=$MODE leak=$WF_EXEC_TEST_LEAK"; echo warn >&2',
                                        env='{"MODE": "fast"}')))
    final = await ended(enc, wf_id)
    assert final["status"] == "completed" and not final["had_errors"], final
    jobs = final["blocks"][0]["jobs"]
    assert [j["status"] for j in jobs] == ["completed", "completed"]
    assert jobs[0]["output"] == "hello from exec\n"
    assert "mode=fast leak=\n" in jobs[1]["output"] and "warn\n" in jobs[1]["output"]
    logs = await client.logs(enc, wf_id, 0, 0)
    assert logs["output"] == "hello from exec\n"


async def test_a_command_that_fails_names_its_exit_code(exec_system, enc):
    wf_id = await start(enc, workreq(NAME, sh("echo working; echo 'no space left' >&2; exit 7")))
    final = await ended(enc, wf_id)
    job = final["blocks"][0]["jobs"][0]
    assert final["status"] == "failed" and job["status"] == "failed", final
    assert job["error"] == "exited with code 7: no space left"
    assert "working\n" in job["output"]


async def test_a_secret_is_redacted_in_status_logs_and_error(exec_system, enc):
    wf_id = await start(enc, workreq(NAME, sh('echo "arg=$1"; echo "env=$TOKEN"; exit 2', "secret:EXEC_TOKEN",
                                              env='{"TOKEN": "secret:EXEC_TOKEN"}')))
    final = await ended(enc, wf_id)
    job = final["blocks"][0]["jobs"][0]
    assert job["error"] == "exited with code 2: env=[secret:EXEC_TOKEN]"
    assert "arg=[secret:EXEC_TOKEN]" in job["output"]
    logs = await client.logs(enc, wf_id, 0, 0)
    assert "arg=[secret:EXEC_TOKEN]" in logs["output"]
    assert SECRET not in json.dumps(final) and SECRET not in json.dumps(logs)


async def test_a_timeout_is_retried_up_to_attempts_and_leaves_nothing(exec_system, enc, tmp_path):
    pid_file = tmp_path / "pids"
    wf_id = await start(enc, workreq(NAME, sh(TREE, str(pid_file), timeout="1", attempts="2")))
    final, job = await job_ended(enc, wf_id)
    assert job["status"] == "failed" and job["error"] == "timed out after 1 s", final
    history = [event_decoder.decode(m.data) for m in await read_history(enc.jetstream(), wf_id)]
    assert [ev.attempt for ev in history if isinstance(ev, JobStarted)] == [1, 2]
    assert [ev.retrying for ev in history if isinstance(ev, JobFailed)] == [True, False]
    pids = await pids_in(pid_file, 2 * TREE_PIDS)
    assert_all_gone(pids[:TREE_PIDS])
    assert_all_gone(pids[TREE_PIDS:])


async def test_a_command_not_allowed_is_refused(exec_system, enc):
    with pytest.raises(WfError) as err:
        await client.submit(enc, workreq(NAME, {"name": "exec", "args": {"argv": '["/usr/bin/id"]'}}))
    assert "not allowed" in str(err.value)


async def test_a_cancel_mid_run_kills_the_whole_tree(exec_system, enc, tmp_path):
    pid_file = tmp_path / "pids"
    wf_id = await start(enc, workreq(NAME, sh(TREE, str(pid_file), timeout="600")))
    pids = await pids_in(pid_file, TREE_PIDS)
    assert all(alive(p) for p in pids)
    await client.cancel(enc, wf_id)
    final, job = await job_ended(enc, wf_id)
    assert final["status"] == "failed" and job["status"] == "failed" and job["error"] == "cancelled by request", final
    assert job["output"] == "running\n"  # what it printed before the cancel is kept
    assert_all_gone(pids)


async def test_an_emergency_stop_mid_run_kills_the_whole_tree(exec_system, enc, tmp_path):
    pid_file = tmp_path / "pids"
    kv = await enc.jetstream().key_value("wf_es")
    wf_id = await start(enc, workreq(ES_NAME, sh(TREE, str(pid_file), timeout="600")))
    try:
        pids = await pids_in(pid_file, TREE_PIDS)
        assert all(alive(p) for p in pids)
        await kv.put(ES_NAME, b"stop")
        final, job = await job_ended(enc, wf_id)
        assert final["was_es_stopped"] and job["status"] == "failed", final
        assert job["error"] == "cancelled: emergency stop"
        assert_all_gone(pids)
        assert await last_event(enc.jetstream(), f"wf.evt.{wf_id}.job.0.0.failed") is not None
    finally:
        await kv.put(ES_NAME, b"go")


async def test_a_runner_killed_mid_run_leaves_no_program_and_an_attempts_1_job_is_not_run_again(enc, tmp_path):
    """kill -9 of the runner running a job: its program dies with it (PR_SET_PDEATHSIG), and the
    redelivered command is not started again (`attempts` 1: the command may have done its work);
    the job fails saying so."""
    started = tmp_path / "started"
    script = 'echo "$$ $PPID" >> "$1"; echo running; sleep 300'
    wf_id = await start(enc, workreq(NAME, sh(script, str(started))))
    line = await eventually(lambda: _first_line(started), 20, what="the program to start")
    program, runner = (int(p) for p in line.split())
    os.kill(runner, signal.SIGKILL)
    await eventually(lambda: _gone(program), 5, what="the program to die with its runner")
    status = await ended(enc, wf_id, timeout_s=60)  # after the command's ack wait (10 s), redelivered
    job = status["blocks"][0]["jobs"][0]
    assert job["status"] == "failed" and "not run again" in job["error"], job
    assert len(started.read_text().splitlines()) == 1, "the command was started twice"
    assert_all_gone([program])  # and what it started (its sleep) was killed by the runner that took it next


async def _gone(pid: int) -> bool | None:
    return True if not alive(pid) else None


async def _first_line(path: Path) -> str | None:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    return lines[0] if lines else None
