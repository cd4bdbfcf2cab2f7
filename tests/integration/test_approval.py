"""The two-person rule through a real server: the requireApproval policy, `wf.api.approve` and
`wf.api.deny`, exec's 412 until enough distinct people (never the submitter, of the policy's role)
approved, a denial ending the workflow rejected, and the record of who approved (StatusResp, history).

People are made with `wf user add` while the system runs; their roles reach wf-intake through KV
`wf_people`. `system.url` is the admin (inside WF)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import nats
import nats.js.errors
import pytest

from tests.conftest import REPO, RunningSystem, eventually, start_system, wait_terminal
from tests.integration.test_people import env_url, wf
from wf import client

pytestmark = pytest.mark.integration
GUARDED = "GuardedSleep"
PEOPLE = {"sam": "client", "cleo": "client", "olga": "operator", "oscar": "operator", "otto": "operator"}


@pytest.fixture(scope="module")
def approval_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    tmp = tmp_path_factory.mktemp("approval")
    config_dir = tmp / "configs"
    shutil.copytree(REPO / "configs", config_dir)
    with open(config_dir / "policies.json", "a") as fh:
        fh.write("\n" + json.dumps({"Name": GUARDED, "Policies": [
            {"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["sleep"]}},
            {"Name": "requireApproval", "Settings": {"approvers": 2, "role": "operator"}}]}) + "\n")
    with open(config_dir / "es.json", "a") as fh:
        fh.write("\n" + json.dumps({"Name": GUARDED, "Status": "go"}) + "\n")
    running = start_system(tmp, "--time-scale", "0.01", "--runners", "2", config_dir=config_dir)
    try:
        for name, role in PEOPLE.items():
            added = wf(running, "user", "add", name, "--role", role)
            assert added.returncode == 0, added.stderr
        yield running
    finally:
        assert running.stop() == 0, running.log_tail()


def guarded(seconds: int = 1) -> bytes:
    return json.dumps({"name": GUARDED, "desc": "two-person rule", "blocks": [
        {"desc": "b", "rate_limit": 1, "jobs": [{"name": "sleep", "args": {"seconds": str(seconds)}}]}]}).encode()


class People:
    """A connection per person, by name."""

    def __init__(self, system: RunningSystem) -> None:
        self.system = system
        self.conns: dict[str, nats.aio.client.Client] = {}

    async def __call__(self, name: str):  # type: ignore[no-untyped-def]
        if name not in self.conns:
            self.conns[name] = await nats.connect(env_url(self.system, name))
        return self.conns[name]

    async def close(self) -> None:
        for nc in self.conns.values():
            await nc.close()


@pytest.fixture
async def people(approval_system):  # type: ignore[no-untyped-def]
    found = People(approval_system)
    yield found
    await found.close()


async def error_of(call) -> client.WfError:  # type: ignore[no-untyped-def]
    with pytest.raises(client.WfError) as caught:
        await call
    return caught.value


async def submitted_by_sam(people) -> str:  # type: ignore[no-untyped-def]
    reply = await client.submit(await people("sam"), guarded())
    assert reply["verdict"] == "approved", reply
    return reply["id"]


async def test_exec_waits_for_two_distinct_operators_other_than_the_submitter(approval_system, people):
    sam, olga = await people("sam"), await people("olga")
    wf_id = await submitted_by_sam(people)
    status = await client.status(sam, wf_id)
    assert (status["approvals_needed"], status["approvals"]) == (2, [])

    err = await error_of(client.execute(sam, wf_id))
    assert err.code == 412 and "has 0 of 2 approvals" in err.message, err.message

    # the submitter may not approve their own WorkReq, whatever their role
    err = await error_of(client.approve(sam, wf_id, "mine"))
    assert err.code == 403 and "submitted" in err.message, err.message
    # a client may not approve where the policy asks for operators
    err = await error_of(client.approve(await people("cleo"), wf_id))
    assert err.code == 403 and "client" in err.message and "operator" in err.message, err.message

    assert await client.approve(olga, wf_id, "checked the site") == {"id": wf_id, "approvals": 1, "approvals_needed": 2}
    err = await error_of(client.approve(olga, wf_id, "again"))
    assert err.code == 409 and "already approved" in err.message, err.message

    err = await error_of(client.execute(sam, wf_id))
    assert err.code == 412, err.message
    assert f"workflow {wf_id} has 1 of 2 approvals (requireApproval: operators other than the submitter)" in err.message

    # the second, with the CLI (a person's own credential)
    approved = wf(approval_system, "approve", wf_id, "--comment", "second pair of eyes", url=env_url(approval_system, "oscar"))
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == f"{wf_id} approved (2 of 2 approvals)"

    await client.execute(sam, wf_id)
    final = await wait_terminal(sam, wf_id)
    assert final["status"] == "completed", final
    assert [(a["by"], a["comment"]) for a in final["approvals"]] == [
        ("olga", "checked the site"), ("oscar", "second pair of eyes")]
    assert all(a["at"].endswith("Z") and a["at"].startswith("20") for a in final["approvals"])

    # too late to approve or deny once it ran
    err = await error_of(client.approve(await people("otto"), wf_id))
    assert err.code == 409 and "already executing or executed" in err.message, err.message
    err = await error_of(client.deny(await people("otto"), wf_id, "too late"))
    assert err.code == 409, err.message

    history = wf(approval_system, "history", wf_id, url=approval_system.client_url)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    approvals = [line for line in lines if " approval " in line]
    assert len(approvals) == 2 and "olga" in approvals[0] and "checked the site" in approvals[0], history.stdout
    assert "oscar" in approvals[1], history.stdout
    assert any("needs 2 approvals" in line for line in lines), history.stdout


async def test_a_denial_ends_the_workflow_rejected_and_exec_gets_412(approval_system, people):
    sam, olga = await people("sam"), await people("olga")
    wf_id = await submitted_by_sam(people)
    await client.approve(olga, wf_id, "fine by me")

    err = await error_of(client.deny(olga, wf_id, "   "))
    assert err.code == 400 and "comment" in err.message, err.message
    err = await error_of(client.deny(await people("cleo"), wf_id, "no"))
    assert err.code == 403, err.message

    denied = wf(approval_system, "deny", wf_id, "--comment", "wrong change window", url=env_url(approval_system, "otto"))
    assert denied.returncode == 0, denied.stderr
    assert denied.stdout.strip() == f"{wf_id} denied"

    async def rejected():  # type: ignore[no-untyped-def]
        status = await client.status(sam, wf_id)
        return status if status["verdict"] == "rejected" else None

    status = await eventually(rejected, 10, what="the denial to show")
    assert status["reason"] == "denied by otto: wrong change window", status
    assert status["status"] == "not_started"

    err = await error_of(client.execute(sam, wf_id))
    assert err.code == 412 and "denied by otto: wrong change window" in err.message, err.message
    for call in (client.approve(await people("oscar"), wf_id), client.deny(olga, wf_id, "again")):
        err = await error_of(call)
        assert err.code == 409 and "denied" in err.message, err.message

    history = wf(approval_system, "history", wf_id, "--json", url=approval_system.client_url)
    steps = [json.loads(line) for line in history.stdout.splitlines()]
    assert {"step": "denied", "actor": "otto", "comment": "wrong change window"}.items() <= steps[-1].items(), steps


async def test_what_needs_no_approval_cannot_be_approved_and_bad_requests_are_refused(approval_system, people):
    olga = await people("olga")
    plain = (await client.submit(await people("sam"), json.dumps({"name": "SleepDemo", "blocks": [
        {"jobs": [{"name": "sleep", "args": {"seconds": "1"}}]}]}).encode()))["id"]
    for call in (client.approve(olga, plain), client.deny(olga, plain, "no")):
        err = await error_of(call)
        assert err.code == 409 and "needs no approval" in err.message, err.message
    await client.execute(olga, plain)  # exec as before, no approval asked

    err = await error_of(client.approve(olga, "01J00000000000000000000000"))
    assert err.code == 404, err.message
    for body in (b"not json", b'{"id": "x", "by": "olga"}', b'{"id": "a", "id": "b"}', b'{"comment": "no id"}'):
        err = await error_of(client.call(olga, "wf.api.approve", body))
        assert err.code == 400, (body, err.message)

    # the CLI's one-line error names what a refused person needs
    wf_id = await submitted_by_sam(people)
    refused = wf(approval_system, "approve", wf_id, url=approval_system.client_url)
    assert refused.returncode != 0 and refused.stderr.count("\n") == 1, refused.stderr
    assert "error 403" in refused.stderr and "operator" in refused.stderr, refused.stderr
    missing = wf(approval_system, "deny", wf_id)
    assert missing.returncode != 0 and "--comment" in missing.stderr
    # the submitter, a client, may withdraw their own (deny), though not approve it
    assert await client.deny(await people("sam"), wf_id, "withdrawn") == {"id": wf_id}


async def test_roles_follow_the_registry_and_the_admin_may_approve(approval_system, people):
    """`wf user rm` and `add` update KV wf_people at once; a request from inside WF is an admin's."""
    admin = await nats.connect(approval_system.url)
    try:
        kv = await admin.jetstream().key_value("wf_people")
        assert (await kv.get("olga")).value == b"operator" and (await kv.get("cleo")).value == b"client"
        assert (await kv.get("operator")).value == b"operator"  # operator.env's person, synced by `wf up`

        # cleo, a client, is removed and comes back as an operator: now she may approve
        assert wf(approval_system, "user", "rm", "cleo").returncode == 0
        assert wf(approval_system, "user", "add", "cleo", "--role", "operator").returncode == 0
        assert (await kv.get("cleo")).value == b"operator"
        cleo = await nats.connect(env_url(approval_system, "cleo"))
        try:
            wf_id = await submitted_by_sam(people)
            assert (await client.approve(cleo, wf_id))["approvals"] == 1
        finally:
            await cleo.close()
        # the admin's credential acts inside WF, as an admin
        assert (await client.approve(admin, wf_id, "admin"))["approvals"] == 2
        await client.execute(await people("sam"), wf_id)
        assert (await wait_terminal(admin, wf_id))["status"] == "completed"
    finally:
        await admin.close()


async def test_an_exec_and_a_denial_at_once_never_both_stand(approval_system, people):
    """JetStream itself refuses the exec once a denial is stored and the denial once an exec is; two
    execs at once are one."""
    import asyncio

    admin = await nats.connect(approval_system.url)
    try:
        sam, olga, oscar, otto = [await people(name) for name in ("sam", "olga", "oscar", "otto")]
        for _ in range(5):
            wf_id = await submitted_by_sam(people)
            await client.approve(olga, wf_id)
            await client.approve(oscar, wf_id)
            results = await asyncio.gather(client.execute(sam, wf_id), client.execute(sam, wf_id),
                                           client.deny(otto, wf_id, "stop"), return_exceptions=True)
            ok = [r for r in results if not isinstance(r, BaseException)]
            assert len(ok) == 1, results  # one exec, or the denial: never two
            js = admin.jetstream()
            stored = set()
            for subject in ("exec_requested", "denied"):
                try:
                    await js.get_last_msg("WF_EVENTS", f"wf.evt.{wf_id}.{subject}")
                    stored.add(subject)
                except nats.js.errors.NotFoundError:
                    pass
            assert len(stored) == 1, (stored, results)
            for r in results:
                if isinstance(r, client.WfError):
                    assert r.code in (409, 412), r
    finally:
        await admin.close()
