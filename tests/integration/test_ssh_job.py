"""The `ssh` job against a real OpenSSH server (tests/sshd.py: Debian's sshd on a loopback port,
generated host and user keys): first the job alone, then through the real system (`wf up`, its
runners as separate processes, the `allowHosts` policy). Success with its output, a bad exit code,
the timeout, a cancel and an emergency stop mid-run that leave nothing running on the remote side,
a host key mismatch and an unknown host refused before anything runs, connection refused retried,
a login refused not retried, a secret redacted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from schemas import JobFailed, JobStarted, event_decoder
from services.common.bus import read_history
from services.inventory import InventorySource
from services.jobs import JobContext, JobError
from services.jobs.output import Output, Secrets
from services.jobs.ssh_cmd import SshJob
from tests.conftest import REPO, configs_with, eventually, start_system
from tests.procs import alive as pid_alive
from tests.sshd import Sshd, sshd_or_skip
from wf import client
from wf.client import WfError
from wf.up import free_port

pytestmark = pytest.mark.integration
NAME = "SshTest"
ES_NAME = "SshEsTest"
SECRET = "Ssh-s3cr3t-Value"

# the command's tree: sh, a sleep, a sh with its own sleep (a grandchild); each writes its pid to PIDS
TREE = """sh -c 'echo $$ >> PIDS; sleep 300 & echo $! >> PIDS; sh -c "sleep 300 & echo \\$! >> PIDS; wait" &
echo $! >> PIDS; echo running; wait'"""
TREE_PIDS = 4


def tree(pid_file: Path) -> str:
    return TREE.replace("PIDS", str(pid_file))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[Sshd]:
    server = sshd_or_skip(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def ssh_job(server: Sshd, **environ: str) -> SshJob:
    return SshJob(InventorySource(REPO / "data"), environ={**server.env(), **environ})


def ctx(attempt: int = 1, secrets: Secrets | None = None) -> JobContext:
    secrets = secrets or Secrets()
    return JobContext(workflow_id="W", block=0, job=0, attempt=attempt, time_scale=1.0, output=Output(secrets),
                      secrets=secrets)


def job_args(server: Sshd, command: str, **more: str) -> dict[str, str]:
    return {"host": server.host, "port": str(server.port), "user": server.user, "command": command, **more}


def assert_all_gone(pids: list[int], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            pytest.fail(f"still running on the remote side {within_s} s after the job ended: "
                        f"{[p for p in pids if pid_alive(p)]}")
        time.sleep(0.05)


async def pids_in(path: Path, count: int) -> list[int]:
    async def probe():
        lines = path.read_text().split() if path.exists() else []
        return [int(p) for p in lines] if len(lines) >= count else None

    return await eventually(probe, 20, what=f"{count} pids in {path}")


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, capture_output=True)
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


# ------------------------------------------------------------------ the job alone, against sshd


async def test_a_command_runs_and_its_output_is_captured(sshd):
    c = ctx()
    await ssh_job(sshd).run(job_args(sshd, "echo hello from ssh; echo warn >&2; id -un"), c)
    assert c.output.full() == f"hello from ssh\nwarn\n{sshd.user}\n"


async def test_a_command_reading_its_input_reads_an_end_of_file_at_once(sshd):
    c = ctx()
    started = time.monotonic()
    await ssh_job(sshd).run(job_args(sshd, "read x || echo eof; echo after", timeout="10"), c)
    assert c.output.full() == "eof\nafter\n" and time.monotonic() - started < 5


async def test_a_bad_exit_code_fails_naming_it_and_its_last_line_not_retried(sshd):
    c = ctx()
    with pytest.raises(JobError) as err:
        await ssh_job(sshd).run(job_args(sshd, "echo working; echo 'no space left' >&2; exit 7"), c)
    assert err.value.message == "exited with code 7: no space left"
    assert not err.value.retryable and not err.value.fatal
    assert c.output.full() == "working\nno space left\n"
    with pytest.raises(JobError) as err:
        await ssh_job(sshd).run(job_args(sshd, "exit 7", fatal="true"), ctx())
    assert err.value.fatal and err.value.message == "exited with code 7: (no output)"
    await ssh_job(sshd).run(job_args(sshd, "exit 7", ok_codes="0,7"), ctx())


async def test_a_secret_in_the_output_is_redacted_in_output_and_error(sshd):
    secrets = Secrets(environ={"SSH_TOKEN": SECRET})
    c = ctx(secrets=secrets)
    with pytest.raises(JobError) as err:
        await ssh_job(sshd).run(job_args(sshd, f"printf 'token=%s-%s\\n' {' '.join(SECRET.rsplit('-', 1))}; exit 1"), c)
    assert err.value.message == "exited with code 1: token=[secret:SSH_TOKEN]"
    assert c.output.full() == "token=[secret:SSH_TOKEN]\n"


async def test_a_timeout_stops_the_remote_command_and_is_retried(sshd, tmp_path):
    pid_file = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(JobError) as err:
        await ssh_job(sshd).run(job_args(sshd, tree(pid_file), timeout="2"), ctx())
    assert time.monotonic() - started < 2 + 3, "the job ends at its timeout, not when the command would"
    assert err.value.retryable and "timed out after 2 s running the command on 127.0.0.1" in err.value.message
    assert_all_gone(await pids_in(pid_file, TREE_PIDS))
    # on its last attempt (attempts "2"), the same failure is not retried
    pid_file.unlink()
    with pytest.raises(JobError) as err:
        await ssh_job(sshd).run(job_args(sshd, tree(pid_file), timeout="1", attempts="2"), ctx(attempt=2))
    assert not err.value.retryable
    assert_all_gone(await pids_in(pid_file, TREE_PIDS))


async def test_a_cancel_mid_run_leaves_nothing_running_remotely(sshd, tmp_path):
    pid_file = tmp_path / "pids"
    c = ctx()
    task = asyncio.create_task(ssh_job(sshd).run(job_args(sshd, tree(pid_file), timeout="600"), c))
    pids = await pids_in(pid_file, TREE_PIDS)
    assert all(pid_alive(p) for p in pids)

    async def printed() -> bool:
        return "running" in c.output.full()

    await eventually(printed, 5, what="its output")
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 3, "a cancel stops the job at once"
    assert_all_gone(pids)
    assert c.output.full() == "running\n"


async def test_a_host_key_mismatch_is_refused_and_nothing_runs(sshd, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{sshd.host}]:{sshd.port} {keygen(tmp_path / 'other_host_key')}\n")
    marker = tmp_path / "marker"
    with pytest.raises(JobError) as err:
        await ssh_job(sshd, WF_SSH_KNOWN_HOSTS=str(known_hosts)).run(job_args(sshd, f"touch {marker}"), ctx())
    assert f"host key of 127.0.0.1:{sshd.port} not verified" in err.value.message, err.value.message
    assert "nothing was run" in err.value.message and not err.value.retryable
    assert not marker.exists()
    # the right key works (the same command, the server's own line)
    await ssh_job(sshd).run(job_args(sshd, f"touch {marker}"), ctx())
    assert marker.exists()


async def test_an_unknown_host_is_refused_and_nothing_runs(sshd, tmp_path):
    host_key = sshd.host_key_line.split(" ", 1)[1]
    marker = tmp_path / "marker"
    other_port = 1 if sshd.port != 1 else 2
    # another host; this host at another port; nobody
    for listed in (f"[127.0.0.2]:{sshd.port} {host_key}", f"[127.0.0.1]:{other_port} {host_key}", ""):
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(listed + "\n")
        with pytest.raises(JobError) as err:
            await ssh_job(sshd, WF_SSH_KNOWN_HOSTS=str(known_hosts)).run(job_args(sshd, f"touch {marker}"), ctx())
        assert f"host key of 127.0.0.1:{sshd.port} not verified" in err.value.message, (listed, err.value.message)
        assert not err.value.retryable
    assert not marker.exists()


async def test_connection_refused_is_retried_until_the_last_attempt(sshd):
    closed = {"host": "127.0.0.1", "port": str(free_port()), "user": sshd.user, "command": "true"}
    with pytest.raises(JobError) as err:
        await ssh_job(sshd).run(closed, ctx())
    assert err.value.message == f"cannot connect to 127.0.0.1:{closed['port']}: Connection refused"
    assert err.value.retryable
    with pytest.raises(JobError) as err:
        await ssh_job(sshd).run(closed, ctx(attempt=3))  # attempts "3" by default: the last one
    assert not err.value.retryable


async def test_a_login_refused_is_not_retried(sshd, tmp_path):
    keygen(tmp_path / "stranger")
    marker = tmp_path / "marker"
    with pytest.raises(JobError) as err:
        await ssh_job(sshd, WF_SSH_KEY=str(tmp_path / "stranger")).run(job_args(sshd, f"touch {marker}"), ctx())
    assert f"login as {sshd.user!r} on 127.0.0.1:{sshd.port} refused" in err.value.message, err.value.message
    assert not err.value.retryable and not marker.exists()


# ------------------------------------------------------------------ through the real system


@pytest.fixture(scope="module")
def ssh_system(tmp_path_factory, sshd):
    tmp = tmp_path_factory.mktemp("ssh")
    allow = {"Name": "allowHosts", "Settings": {"Hosts": ["127.0.0.1"]}}
    config_dir = configs_with(tmp, {NAME: [allow], ES_NAME: [allow]})
    system = start_system(tmp, "--time-scale", "1", "--runners", "2", config_dir=config_dir,
                          env={**sshd.env(), "WF_SECRET_SSH_TOKEN": SECRET})
    yield system
    assert system.stop() == 0, system.log_tail()
    assert SECRET not in system.log_path.read_text(errors="replace"), "a secret value reached the log"


@pytest.fixture
async def snc(ssh_system):
    nc = await nats.connect(ssh_system.url)
    yield nc
    await nc.close()


def workreq(name: str, *jobs: dict) -> bytes:
    return json.dumps({"name": name, "blocks": [{"rate_limit": 1, "jobs": list(jobs)}]}).encode()


def ssh(server: Sshd, command: str, **more: str) -> dict:
    return {"name": "ssh", "args": job_args(server, command, **more)}


async def start(nc, body: bytes) -> str:
    reply = await client.submit(nc, body)
    assert reply["verdict"] == "approved", reply
    await client.execute(nc, reply["id"])
    return reply["id"]


async def job_ended(nc, wf_id: str) -> tuple[dict, dict]:
    async def probe():
        status = await client.status(nc, wf_id)
        job = status["blocks"][0]["jobs"][0]
        return (status, job) if status["status"] in ("completed", "failed") and job["status"] != "running" else None

    return await eventually(probe, 30, what=f"workflow {wf_id} and its job to end")


async def test_a_workflow_with_an_ssh_job_completes_with_its_output(ssh_system, snc, sshd):
    wf_id = await start(snc, workreq(NAME, ssh(sshd, "echo hello from ssh; echo warn >&2")))
    final, job = await job_ended(snc, wf_id)
    assert final["status"] == "completed" and not final["had_errors"], final
    assert job["status"] == "completed" and job["output"] == "hello from ssh\nwarn\n", job
    logs = await client.logs(snc, wf_id, 0, 0)
    assert logs["output"] == "hello from ssh\nwarn\n"


async def test_a_failing_ssh_command_is_reported_with_its_exit_code_and_secret_redacted(ssh_system, snc, sshd):
    # the secret is not in the WorkReq (a command is plain text): the remote side prints it
    wf_id = await start(snc, workreq(NAME, ssh(sshd, f"printf 'token=%s-%s\\n' {' '.join(SECRET.rsplit('-', 1))}; exit 5")))
    final, job = await job_ended(snc, wf_id)
    assert final["status"] == "failed" and job["status"] == "failed", final
    assert job["error"] == "exited with code 5: token=[secret:SSH_TOKEN]"
    assert job["output"] == "token=[secret:SSH_TOKEN]\n"
    assert SECRET not in json.dumps(final) and SECRET not in json.dumps(await client.logs(snc, wf_id, 0, 0))


async def test_a_refused_connection_is_retried_with_backoff_up_to_attempts(ssh_system, snc, sshd):
    job = {"name": "ssh", "args": {"host": "127.0.0.1", "port": str(free_port()), "user": sshd.user,
                                   "command": "true", "attempts": "2"}}
    wf_id = await start(snc, workreq(NAME, job))
    final, entry = await job_ended(snc, wf_id)
    assert entry["status"] == "failed" and "cannot connect to 127.0.0.1" in entry["error"], final
    history = [event_decoder.decode(m.data) for m in await read_history(snc.jetstream(), wf_id)]
    assert [ev.attempt for ev in history if isinstance(ev, JobStarted)] == [1, 2]
    assert [ev.retrying for ev in history if isinstance(ev, JobFailed)] == [True, False]


async def test_a_host_not_allowed_is_refused(ssh_system, snc, sshd):
    with pytest.raises(WfError) as err:
        await client.submit(snc, workreq(NAME, {"name": "ssh", "args": {**job_args(sshd, "true"), "host": "127.0.0.2"}}))
    assert "127.0.0.2" in str(err.value)


async def test_a_cancel_mid_run_leaves_nothing_running_remotely_through_the_system(ssh_system, snc, sshd, tmp_path):
    pid_file = tmp_path / "pids"
    wf_id = await start(snc, workreq(NAME, ssh(sshd, tree(pid_file), timeout="600")))
    pids = await pids_in(pid_file, TREE_PIDS)
    assert all(pid_alive(p) for p in pids)
    await client.cancel(snc, wf_id)
    final, job = await job_ended(snc, wf_id)
    assert final["status"] == "failed" and job["status"] == "failed" and job["error"] == "cancelled by request", final
    assert_all_gone(pids)


async def test_an_emergency_stop_mid_run_leaves_nothing_running_remotely(ssh_system, snc, sshd, tmp_path):
    pid_file = tmp_path / "pids"
    kv = await snc.jetstream().key_value("wf_es")
    wf_id = await start(snc, workreq(ES_NAME, ssh(sshd, tree(pid_file), timeout="600")))
    try:
        pids = await pids_in(pid_file, TREE_PIDS)
        assert all(pid_alive(p) for p in pids)
        await kv.put(ES_NAME, b"stop")
        final, job = await job_ended(snc, wf_id)
        assert final["was_es_stopped"] and job["status"] == "failed", final
        assert job["error"] == "cancelled: emergency stop"
        assert_all_gone(pids)
    finally:
        await kv.put(ES_NAME, b"go")
