"""Every state change says who, and no one acts as someone else (a real nats-server and real services).

`system.client_url` and `system.operator_url` are two people, users `client` and `operator`, in the
PEOPLE account; `system.url` is the admin, inside the services' account. The name recorded is the one
the server authenticated (`Nats-Request-Info`), never a claim of the request."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nats
import pytest

from tests.conftest import REPO, eventually, wait_terminal
from wf import client

pytestmark = pytest.mark.integration
SLEEP = (REPO / "examples" / "sleep.json").read_bytes()


def long_sleep(seconds: int = 3000) -> bytes:
    """A sleep long enough to be cancelled while it runs (seconds x the fixture's time scale of 0.01)."""
    return json.dumps({"name": "SleepDemo", "desc": "identity", "blocks": [
        {"desc": "long", "rate_limit": 1, "jobs": [{"name": "sleep", "desc": "long", "args": {"seconds": str(seconds)}}]},
    ]}).encode()


async def who(nc, wf_id: str, **expected: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Wait until the StatusResp records these actors (the projection follows within milliseconds)."""

    async def probe():  # type: ignore[no-untyped-def]
        status = await client.status(nc, wf_id)
        return status if all(status.get(key) == value for key, value in expected.items()) else None

    return await eventually(probe, 20, what=f"{wf_id} to record {expected}")


def wf_cli(url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wf.cli", *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=60, env={**os.environ, "WF_NATS_URL": url, "WF_DEBUG": ""}, check=False)


async def test_the_client_submits_the_operator_executes_and_the_status_says_so(system):
    people = await nats.connect(system.client_url), await nats.connect(system.operator_url)
    alice, bob = people
    try:
        wf_id = (await client.submit(alice, SLEEP))["id"]
        await client.execute(bob, wf_id)
        final = await wait_terminal(alice, wf_id)
        assert final["status"] == "completed"
        status = await who(alice, wf_id, submitted_by="client", executed_by="operator")
        assert status["cancelled_by"] == ""
        # the same in the projection a person reads (KV wf_status's view)
        kv = await alice.jetstream().key_value("wf_status")

        async def projected():  # type: ignore[no-untyped-def]
            value = (await kv.get(wf_id)).value
            return value and json.loads(value)
        stored = await eventually(projected, 10, what="the projection's view")
        assert (stored["submitted_by"], stored["executed_by"]) == ("client", "operator")
    finally:
        for nc in people:
            await nc.close()


async def test_a_cancel_says_who_cancelled(system):
    alice, bob = await nats.connect(system.client_url), await nats.connect(system.operator_url)
    try:
        wf_id = (await client.submit(alice, long_sleep()))["id"]
        await client.execute(alice, wf_id)
        await client.cancel(bob, wf_id)
        assert (await wait_terminal(alice, wf_id))["status"] == "failed"
        await who(alice, wf_id, submitted_by="client", executed_by="client", cancelled_by="operator")
    finally:
        await alice.close()
        await bob.close()


async def test_a_person_cannot_name_someone_else_in_the_body_or_a_header(system):
    alice = await nats.connect(system.client_url)
    try:
        # a field of the body: refused, as any field a WorkReq or an id request does not have
        claim = {**json.loads(SLEEP), "submitted_by": "operator"}
        with pytest.raises(client.WfError) as refused:
            await client.submit(alice, json.dumps(claim).encode())
        assert refused.value.code == 400 and "submitted_by" in refused.value.message
        wf_id = (await client.submit(alice, SLEEP))["id"]
        for body in ({"id": wf_id, "by": "operator"}, {"id": wf_id, "executed_by": "operator"}):
            with pytest.raises(client.WfError) as refused:
                await client.call(alice, "wf.api.exec", json.dumps(body).encode())
            assert refused.value.code == 400
        # the admins' header, set by a person: ignored, the real caller is recorded
        forged = {"Wf-Actor": "operator"}
        wf_id = (await client.call(alice, "wf.api.submit", SLEEP, headers=forged))["id"]
        await client.call(alice, "wf.api.exec", json.dumps({"id": wf_id}).encode(), headers=forged)
        await who(alice, wf_id, submitted_by="client", executed_by="client")
        # and a forged Nats-Request-Info naming another person is replaced by the server's
        info = json.dumps({"acc": "PEOPLE", "user": "operator"})
        other = (await client.call(alice, "wf.api.submit", SLEEP, headers={"Nats-Request-Info": info}))["id"]
        await who(alice, other, submitted_by="client")
        await wait_terminal(alice, wf_id)
    finally:
        await alice.close()


async def test_an_idempotent_resubmit_keeps_the_first_submitter(system):
    alice, bob = await nats.connect(system.client_url), await nats.connect(system.operator_url)
    try:
        first = await client.submit(alice, SLEEP, key="identity-same-key")
        again = await client.submit(bob, SLEEP, key="identity-same-key")
        assert again["id"] == first["id"]
        await who(bob, first["id"], submitted_by="client")
    finally:
        await alice.close()
        await bob.close()


async def test_the_admin_is_recorded_as_admin_or_as_the_name_it_gives(system):
    admin = await nats.connect(system.url)
    try:
        wf_id = (await client.submit(admin, SLEEP))["id"]
        named = (await client.call(admin, "wf.api.submit", SLEEP, headers={"Wf-Actor": "ops-lead"}))["id"]
        await client.call(admin, "wf.api.exec", json.dumps({"id": named}).encode(), headers={"Wf-Actor": "ops-lead"})
        await client.execute(admin, wf_id)
        await who(admin, wf_id, submitted_by="admin", executed_by="admin")
        await who(admin, named, submitted_by="ops-lead", executed_by="ops-lead")
        await wait_terminal(admin, wf_id)
        await wait_terminal(admin, named)
    finally:
        await admin.close()


async def test_wf_history_prints_every_step_with_its_actor(system):
    alice, bob = await nats.connect(system.client_url), await nats.connect(system.operator_url)
    try:
        wf_id = (await client.submit(alice, long_sleep()))["id"]
        await client.execute(bob, wf_id)

        async def running():  # type: ignore[no-untyped-def]
            return (await client.status(alice, wf_id))["blocks"][0]["jobs"][0]["status"] == "running"

        await eventually(running, 20, what="the job to run")
        await client.cancel(bob, wf_id)
        assert (await wait_terminal(alice, wf_id))["status"] == "failed"
    finally:
        await alice.close()
        await bob.close()

    def history(*flags: str) -> subprocess.CompletedProcess[str]:
        """With the client's credential, until the view (which follows within milliseconds) has the end."""
        for _ in range(20):
            done = wf_cli(system.client_url, "history", wf_id, *flags)
            assert done.returncode == 0, done.stderr
            if "workflow.failed" in done.stdout:
                return done
        pytest.fail(f"wf history never showed the end:\n{done.stdout}")

    lines = history().stdout.splitlines()
    steps = [(ln.split()[1], ln.split()[2]) for ln in lines]
    for step in [("submitted", "client"), ("approved", "wf-policy"), ("exec_requested", "operator"),
                 ("workflow.started", "wf-executor"), ("block.started", "wf-executor"),
                 ("job.started", "wf-jobrunner"), ("cancel_requested", "operator"),
                 ("job.failed", "wf-jobrunner"), ("workflow.failed", "wf-executor")]:
        assert step in steps, lines
    assert steps[0] == ("submitted", "client")  # (the runner's report of its cancelled job may come after the end)
    ended = next(ln for ln in lines if " workflow.failed " in ln)
    assert ended.split()[0].endswith("Z") and "stopped by cancel" in ended
    job = next(ln for ln in lines if " job.started " in ln)
    assert "0.0 sleep attempt 1" in job

    items = [json.loads(ln) for ln in history("--json").stdout.splitlines()]
    assert len(items) == len(lines)
    assert items[0]["step"] == "submitted" and items[0]["actor"] == "client"
    assert any(i["step"] == "cancel_requested" and i["actor"] == "operator" for i in items)
    assert next(i for i in items if i["step"] == "workflow.failed")["stopped_by"] == "cancel"

    unknown = wf_cli(system.client_url, "history", "01NOSUCHWORKFLOW0000000000")
    assert unknown.returncode != 0 and unknown.stdout == ""
    assert unknown.stderr.strip().splitlines() == [
        "wf: unknown id '01NOSUCHWORKFLOW0000000000'; check the id: `wf ls` lists recent workflows"]
    wildcard = wf_cli(system.client_url, "history", "*")
    assert wildcard.returncode != 0 and "is not a workflow id" in wildcard.stderr
