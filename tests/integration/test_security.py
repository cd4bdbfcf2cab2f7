"""Roles enforced by nats-server: what a client may do, and what it is refused."""

from __future__ import annotations

import json
import stat

import nats
import nats.errors
import nats.js.errors
import pytest

from tests.conftest import REPO, eventually, wait_terminal
from wf import client

pytestmark = pytest.mark.integration
SLEEP = (REPO / "examples" / "sleep.json").read_bytes()


class Recorder:
    """Collects the server's asynchronous errors (permissions violations) for one connection."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def record(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    async def violation(self, subject: str) -> bool:
        async def seen():
            return any("permissions violation" in e.lower() and subject.lower() in e.lower() for e in self.errors)

        await eventually(seen, 5, what=f"a permissions violation for {subject}")
        return True


async def connect_as(url: str) -> tuple[nats.aio.client.Client, Recorder]:
    recorder = Recorder()
    return await nats.connect(url, error_cb=recorder.record, allow_reconnect=False), recorder


async def test_connecting_without_credentials_or_with_a_wrong_password_fails(system):
    host = system.client_url.split("@")[-1]
    for url in (f"nats://{host}", f"nats://client:wrong-password@{host}"):
        with pytest.raises((nats.errors.Error, OSError)):
            await nats.connect(url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)


def test_secrets_are_files_only_their_owner_reads(system):
    for name in ("client.env", "operator.env", "admin.env", "nats-server.conf", "auth/users.json",
                 "auth/service-users.json", "auth/wf-users.conf", "auth/people-users.conf", "users/client.env",
                 "users/operator.env"):
        mode = (system.data_dir / name).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600, name
    log = system.log_path.read_text()
    for role_url in (system.url, system.client_url, system.operator_url):
        assert role_url.split("@")[0].split(":")[-1] not in log, "a password reached the log"


async def test_a_client_may_do_what_the_contract_grants(system):
    nc, _ = await connect_as(system.client_url)
    try:
        reply = await client.submit(nc, SLEEP)
        await client.execute(nc, reply["id"])

        assert (await wait_terminal(nc, reply["id"]))["status"] == "completed"
        js = nc.jetstream()
        kv = await js.key_value("wf_status")  # the client's view: a mirror, a few milliseconds behind

        async def projected():  # type: ignore[no-untyped-def]
            try:
                return json.loads((await kv.get(reply["id"])).value)["status"] == "completed"
            except nats.js.errors.KeyNotFoundError:
                return False

        await eventually(projected, 10, what="the completed status in the client's view of wf_status")
        sub = await js.subscribe(f"wf.evt.{reply['id']}.>", stream="WF_EVENTS", ordered_consumer=True)
        first = await sub.next_msg(timeout=5)
        assert first.subject == f"wf.evt.{reply['id']}.submitted"
        await sub.unsubscribe()
        assert (await js.get_last_msg("WF_EVENTS", f"wf.evt.{reply['id']}.approved", direct=True)) is not None
        assert json.loads((await nc.request("$SRV.PING.wf-intake", b"", timeout=2)).data)["name"] == "wf-intake"
    finally:
        await nc.close()


async def test_a_client_cannot_forge_events_commands_stops_or_touch_streams(system):
    nc, recorder = await connect_as(system.client_url)
    admin = await nats.connect(system.url)
    ajs = admin.jetstream()
    try:
        victim = (await client.submit(nc, SLEEP))["id"]  # approved, not executed
        events_before = (await ajs.stream_info("WF_EVENTS")).state.messages
        forged = [
            f"wf.evt.{victim}.approved",  # a verdict
            f"wf.cmd.job.{victim}.0.0",  # a job command
            f"wf.evt.{victim}.job.0.0.completed",  # a job event
            f"wf.evt.{victim}.workflow.completed",  # a workflow event
            "$KV.wf_es.SleepDemo",  # an emergency stop flip
            "$KV.wf_status." + victim,  # the projection
            "$KV.wf_leases." + victim,  # an executor's lease on a workflow
            "$KV.wf_idempotency.0123abcd",  # a submit key's workflow
            "$JS.API.STREAM.DELETE.WF_EVENTS",
            "$JS.API.STREAM.PURGE.WF_EVENTS",
            "$JS.API.CONSUMER.DELETE.WF_EVENTS.policy",
            "$JS.API.STREAM.PURGE.WF_JOBS",
        ]
        for subject in forged:
            await nc.publish(subject, b'{"type": "approved", "id": "%s", "at": 1}' % victim.encode())
        await nc.flush()
        for subject in forged:
            assert await recorder.violation(subject)
        info = await ajs.stream_info("WF_EVENTS")
        assert info.state.messages == events_before, "nothing was stored"
        assert (await ajs.consumer_info("WF_EVENTS", "policy")).name == "policy"
        assert (await (await ajs.key_value("wf_es")).get("SleepDemo")).value == b"go"
        assert (await ajs.stream_info("WF_JOBS")).state.messages == 0
        with pytest.raises(nats.errors.Error):
            await nc.jetstream().delete_stream("WF_EVENTS")
        with pytest.raises(nats.errors.Error):
            await (await nc.jetstream().key_value("wf_status")).put(victim, b"{}")
    finally:
        await nc.close()
        await admin.close()


async def test_an_operator_may_flip_emergency_stops_a_client_may_not(system):
    op, _ = await connect_as(system.operator_url)
    cl, recorder = await connect_as(system.client_url)
    admin = await nats.connect(system.url)
    try:
        es = await op.jetstream().key_value("wf_es")  # the operator's view: a mirror of WF's bucket
        revision = await es.put("OperatorTest", b"stop")  # acknowledged by WF's bucket itself
        truth = await admin.jetstream().key_value("wf_es")
        assert (await truth.get("OperatorTest")).value == b"stop"

        async def mirrored():  # the view follows within milliseconds, not at once
            try:
                return (await es.get("OperatorTest")).value == b"stop"
            except nats.js.errors.KeyNotFoundError:
                return False

        await eventually(mirrored, 5, what="the operator's view of the stop")
        await cl.publish("$KV.wf_es.OperatorTest", b"go")
        await cl.flush()
        assert await recorder.violation("$KV.wf_es.OperatorTest")
        entry = await truth.get("OperatorTest")
        assert (entry.value, entry.revision) == (b"stop", revision)
    finally:
        await op.close()
        await cl.close()
        await admin.close()


async def test_a_forged_command_in_the_work_queue_is_refused_and_recorded(system):
    """Defence in depth: even a command that got into WF_JOBS (here, by the admin) must match an
    executing workflow's approved WorkReq, or no runner runs it."""
    from schemas import JobCommand, encoder, subjects
    from services.common.ids import new_id

    admin = await nats.connect(system.url)
    try:
        js = admin.jetstream()
        never_submitted = new_id()
        approved = (await client.submit(admin, SLEEP))["id"]  # approved but never executed
        forgeries = [
            JobCommand(id=never_submitted, block=0, job=0, name="sleep", args={"seconds": "1"}, at=1.0, workreq="SleepDemo"),
            JobCommand(id=approved, block=0, job=0, name="sleep", args={"seconds": "1"}, at=1.0, workreq="SleepDemo"),
        ]
        for cmd in forgeries:
            await js.publish(subjects.job_command(cmd.id, cmd.block, cmd.job), encoder.encode(cmd))
        await js.publish(subjects.job_command(never_submitted, 0, 1), b"{not a command")  # malformed: terminated too

        async def refused_twice():
            return system.log_path.read_text().count("forged_command_refused") >= 2

        await eventually(refused_twice, what="both forged commands refused in the log")
        for cmd in forgeries:  # neither ran: no `started` event
            with pytest.raises(nats.js.errors.NotFoundError):
                await js.get_last_msg("WF_EVENTS", f"wf.evt.{cmd.id}.job.0.0.started")
        async def all_terminated():  # the malformed one too (a command left un-acked would stay pending)
            info = await js.consumer_info("WF_JOBS", "jobrunner")
            return info.num_ack_pending == 0 and info.num_pending == 0

        await eventually(all_terminated, what="all three commands terminated, not retried")
        assert "bad_message_terminated" in system.log_path.read_text()
    finally:
        await admin.close()


async def test_tls_on_the_client_port(tmp_path):
    import ssl
    import subprocess

    from tests.conftest import start_system

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    system = start_system(tmp_path, "--time-scale", "0", "--tls-cert", str(cert), "--tls-key", str(key),
                          env={"WF_NATS_CA": str(cert)})
    try:
        assert system.client_url.startswith("tls://client:")
        nc = await nats.connect(system.client_url, tls=ssl.create_default_context(cafile=str(cert)))
        try:
            reply = await client.submit(nc, SLEEP)
            await client.execute(nc, reply["id"])

            assert (await wait_terminal(nc, reply["id"]))["status"] == "completed"
        finally:
            await nc.close()
        with pytest.raises((nats.errors.Error, OSError, ssl.SSLError)):  # not trusting the certificate
            await nats.connect(system.client_url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)
    finally:
        assert system.stop() == 0


def test_wf_auth_export_gives_a_server_of_your_own_the_same_roles(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from wf.up import find_nats_server, free_port

    port = free_port()
    out = tmp_path / "auth"
    wf = [sys.executable, "-m", "wf.cli"]
    subprocess.run([*wf, "auth", "export", "--out", str(out), "--server", f"127.0.0.1:{port}"], check=True,
                   capture_output=True, timeout=60)
    assert oct((out / "wf-auth.conf").stat().st_mode & 0o777) == "0o600"
    conf = tmp_path / "server.conf"
    # an include is relative to the file that includes it
    conf.write_text(f'listen: 127.0.0.1:{port}\njetstream {{ store_dir: "{tmp_path / "js"}" }}\ninclude "auth/wf-auth.conf"\n')
    server = subprocess.Popen([find_nats_server(None), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def url(role):
            return (out / f"{role}.env").read_text().strip().partition("=")[2]

        deadline = time.monotonic() + 10
        while True:
            setup = subprocess.run([*wf, "setup"], env={**os.environ, "WF_NATS_URL": url("admin")},
                                   capture_output=True, text=True, timeout=60, check=False)
            if setup.returncode == 0 or time.monotonic() > deadline:
                break
        assert setup.returncode == 0, setup.stderr
        denied = subprocess.run([*wf, "setup"], env={**os.environ, "WF_NATS_URL": url("client")},
                                capture_output=True, text=True, timeout=60, check=False)
        assert denied.returncode != 0, "a client must not administer streams"
    finally:
        server.terminate()
        server.wait(timeout=10)
