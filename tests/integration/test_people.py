"""People, not shared passwords: `wf user add/rm/ls` against a running system, attacked as its users.

Each person's credential is their own (users/NAME.env, mode 0600); the server establishes who acts
(never a header or a field the sender sets); removing a person shuts them out at once while the work
already running goes on; a person's emergency-stop change is recorded with who, when and why, by
wf-intake's gate, whichever way it was written."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys

import nats
import nats.errors
import pytest

from services.safety.stops import emergency_stop_changes, enforced_emergency_stops
from tests.conftest import REPO, eventually
from wf import client

pytestmark = pytest.mark.integration


def wf(system, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if k != "WF_NATS_URL"}
    if url is not None:
        env["WF_NATS_URL"] = url
    return subprocess.run([sys.executable, "-m", "wf.cli", "--data-dir", str(system.data_dir), *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


def env_url(system, name: str) -> str:  # type: ignore[no-untyped-def]
    return (system.data_dir / "users" / f"{name}.env").read_text().strip().partition("=")[2]


def sleep_workreq(seconds: int = 1, jobs: int = 1) -> dict:  # type: ignore[type-arg]
    return {"name": "SleepDemo", "desc": "people", "blocks": [
        {"desc": "b", "rate_limit": jobs, "jobs": [{"name": "sleep", "args": {"seconds": str(seconds)}}] * jobs}]}


async def refused(url: str) -> bool:
    try:
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)
    except (nats.errors.Error, OSError):
        return True
    await nc.close()
    return False


async def status_of(nc, wf_id: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return json.loads((await nc.request("wf.api.status", json.dumps({"id": wf_id}).encode(), timeout=5)).data)


def test_wf_up_made_the_first_people_with_zero_set_up(system):
    """client.env and operator.env are two people of the registry; whoever ran `wf up` got one too."""
    listed = json.loads(wf(system, "user", "ls", "--json").stdout)
    roles = {person["name"]: person["role"] for person in listed}
    assert roles["client"] == "client" and roles["operator"] == "operator"
    assert env_url(system, "client") == system.client_url and env_url(system, "operator") == system.operator_url
    assert len([name for name in roles if name not in ("client", "operator")]) >= 1, listed
    registry = (system.data_dir / "auth" / "users.json").read_text()
    for url in (system.client_url, system.operator_url):
        assert url.split("@")[0].rpartition(":")[2] not in registry, "the registry holds a password"
    conf = (system.data_dir / "nats-server.conf").read_text() + (system.data_dir / "auth" / "people-users.conf").read_text()
    assert system.client_url.split("@")[0].rpartition(":")[2] not in conf, "the server's configuration holds a password"


async def test_a_person_added_and_removed_while_work_runs(system):
    added = wf(system, "user", "add", "alice", "--role", "operator")
    assert added.returncode == 0, added.stderr
    env_file = system.data_dir / "users" / "alice.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    alice_url = env_url(system, "alice")
    assert "alice:" in alice_url and alice_url not in (system.client_url, system.operator_url)
    assert wf(system, "user", "add", "alice", "--role", "client").returncode != 0  # no silent re-issue
    bad = wf(system, "user", "add", "executor")
    assert bad.returncode != 0 and "reserved" in bad.stderr and "Traceback" not in bad.stderr

    admin = await nats.connect(system.url)
    alice = await nats.connect(alice_url, allow_reconnect=False)
    try:
        # work started before the removal: 3 jobs of 2 s (at the fixture's time scale of 0.01)
        reply = await client.submit(alice, json.dumps(sleep_workreq(seconds=200, jobs=3)).encode())
        wf_id = reply["id"]
        await client.execute(alice, wf_id)
        await eventually(lambda: _running(admin, wf_id), 20, what="the workflow to run")

        removed = wf(system, "user", "rm", "alice")
        assert removed.returncode == 0, removed.stderr
        assert not env_file.exists()
        await eventually(lambda: _closed(alice), 10, what="alice's connection to be closed")
        assert await refused(alice_url)
        assert "alice" not in wf(system, "user", "ls").stdout

        async def done() -> dict | None:  # type: ignore[type-arg]
            status = await status_of(admin, wf_id)
            return status if status["status"] in ("completed", "failed") else None

        final = await eventually(done, 60, what="the running workflow to end")
        assert final["status"] == "completed", final  # the services' connections never noticed
    finally:
        await alice.close()
        await admin.close()


async def _running(nc, wf_id: str) -> bool:  # type: ignore[no-untyped-def]
    return (await status_of(nc, wf_id))["status"] == "running"


async def _closed(nc) -> bool:  # type: ignore[no-untyped-def]
    return not nc.is_connected


async def test_emergency_stop_changes_say_who_whatever_the_sender_claims(system):
    """An operator's stop, written with nats-py's KV put, a raw publish claiming to be someone else,
    or the nats CLI's mirror-prefixed subject, is recorded as that operator's, with when and why."""
    assert wf(system, "user", "add", "carol", "--role", "operator").returncode == 0
    carol = await nats.connect(env_url(system, "carol"))
    admin = await nats.connect(system.url)
    try:
        js = carol.jetstream()
        forged = {"Wf-By": "operator", "Wf-Actor": "operator", "Wf-At": "1999-01-01T00:00:00.000Z",
                  "Nats-Request-Info": json.dumps({"acc": "PEOPLE", "user": "operator"}), "Wf-Why": "drill"}
        await js.publish("$KV.wf_es.PeopleStopA", b"stop", headers=forged)
        kv = await js.key_value("wf_es")
        await kv.put("PeopleStopB", b"stop")  # nats-py's KV put
        # the nats CLI writes a mirrored bucket through the mirror's API prefix
        ack = await carol.request("$JS.wf.API.$KV.wf_es.PeopleStopC", b"stop", timeout=5)
        assert json.loads(ack.data).get("stream") == "KV_wf_es", ack.data
        await carol.publish("$KV.wf_es.PeopleStopD", b"stop")  # `nats pub`: no reply asked, a stop all the same
        await carol.flush()

        async def recorded() -> dict | None:  # type: ignore[type-arg]
            changes = await emergency_stop_changes(admin)
            return changes if {"PeopleStopA", "PeopleStopB", "PeopleStopC", "PeopleStopD"} <= set(changes) else None

        changes = await eventually(recorded, 10, what="the changes to be recorded")
        for name in ("PeopleStopA", "PeopleStopB", "PeopleStopC", "PeopleStopD"):
            assert changes[name]["by"] == "carol", changes[name]
            assert changes[name]["at"].startswith("20") and not changes[name]["at"].startswith("1999")
        assert changes["PeopleStopA"]["why"] == "drill"
        # the record is in WF's bucket itself, on the message the services follow
        entry = await admin.request("$JS.API.DIRECT.GET.KV_wf_es", json.dumps({"last_by_subj": "$KV.wf_es.PeopleStopA"}).encode(), timeout=5)
        assert entry.headers and entry.headers.get("Wf-By") == "carol", entry.headers

        shown = wf(system, "es", "show", url=env_url(system, "carol"))
        assert shown.returncode == 0, shown.stderr
        assert any(line.startswith("PeopleStopA stop") and "by carol" in line and "drill" in line
                   for line in shown.stdout.splitlines()), shown.stdout

        # a rollup of the whole bucket would erase every stop and its record: refused, nothing written
        with pytest.raises(nats.js.errors.APIError):
            await js.publish("$KV.wf_es.PeopleStopA", b"go", headers={"Nats-Rollup": "all"})
        assert (await enforced_emergency_stops(admin) or {}).get("PeopleStopA") == "stop"
    finally:
        await carol.close()
        await admin.close()


async def test_a_client_cannot_write_emergency_stops_even_through_the_gate(system):
    person = await nats.connect(system.client_url)
    admin = await nats.connect(system.url)
    try:
        for subject in ("$KV.wf_es.SleepDemo", "$JS.wf.API.$KV.wf_es.SleepDemo"):
            with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
                await person.request(subject, b"stop", timeout=1)
        assert (await enforced_emergency_stops(admin) or {}).get("SleepDemo") == "go"
    finally:
        await person.close()
        await admin.close()


async def test_no_file_holds_a_services_password(system):
    """Each service has only its own credential, in its own process's environment: no file of the
    data dir holds any service's password (the server's configuration holds bcrypt hashes)."""
    from tests.conftest import processes

    running = processes(system.proc.pid)
    passwords = set()
    for role in ("intake", "policy", "executor", "jobrunner", "status"):
        pid = sorted(running[role])[0]
        environ = dict(line.split("=", 1) for line in open(f"/proc/{pid}/environ").read().split("\0") if "=" in line)
        url = environ["WF_NATS_URL"]
        assert url.split("//")[1].startswith(f"{role}:"), f"{role} connects as itself"
        passwords.add(url.split("@")[0].rpartition(":")[2])
    assert len(passwords) == 5
    for path in system.data_dir.rglob("*"):
        if path.is_file() and "jetstream" not in path.parts:
            text = path.read_text(errors="replace")
            assert not any(pw in text for pw in passwords), f"{path} holds a service's password"
    # and one service's credential cannot do another's job
    policy_url = next(line.split("=", 1)[1] for line in open(f"/proc/{sorted(running['policy'])[0]}/environ").read().split("\0")
                      if line.startswith("WF_NATS_URL="))
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(policy_url, error_cb=on_error)
    try:
        # only the executor commands jobs; no service reads or writes another's inbox
        for attempt in (lambda: nc.publish("wf.cmd.job.X.0.0", b"{}"), lambda: nc.subscribe("_INBOX_executor.>"),
                        lambda: nc.publish("_INBOX_executor.forged", b"{}"), lambda: nc.subscribe("_INBOX_status.>")):
            errors.clear()
            await attempt()
            await nc.flush()
            await eventually(lambda: _has(errors), 5, what="the permissions violation")
    finally:
        await nc.close()


async def _has(errors: list[Exception]) -> bool:
    await asyncio.sleep(0)
    return any("permissions violation" in str(e).lower() for e in errors)


async def test_one_person_cannot_act_as_another(system):
    """mallory (an operator) claims to be bob (a client) in every way a sender can: the identity
    headers, a body field; every step is recorded as mallory's, and the body claim is refused."""
    for name, role in (("bob", "client"), ("mallory", "operator")):
        assert wf(system, "user", "add", name, "--role", role).returncode == 0
    mallory = await nats.connect(env_url(system, "mallory"))
    bob = await nats.connect(env_url(system, "bob"))
    claims = {"Wf-Actor": "bob", "Wf-By": "bob", "Nats-Request-Info": json.dumps({"acc": "PEOPLE", "user": "bob"})}
    try:
        body = json.dumps({**sleep_workreq(seconds=30_000), "submitted_by": "bob"}).encode()
        reply = await mallory.request("wf.api.submit", body, timeout=5, headers=claims)
        assert json.loads(reply.data)["error"]["code"] == 400  # no such field: identity is never the body's

        own = await bob.request("wf.api.submit", json.dumps(sleep_workreq(seconds=30_000)).encode(), timeout=5)
        bobs = json.loads(own.data)["id"]
        forged = await mallory.request("wf.api.submit", json.dumps(sleep_workreq()).encode(), timeout=5, headers=claims)
        mallorys = json.loads(forged.data)["id"]
        for subject in ("wf.api.exec", "wf.api.cancel"):
            answer = await mallory.request(subject, json.dumps({"id": bobs}).encode(), timeout=5, headers=claims)
            assert "error" not in json.loads(answer.data), answer.data

        async def recorded() -> dict | None:  # type: ignore[type-arg]
            status = await status_of(bob, bobs)
            return status if status.get("cancelled_by") else None

        status = await eventually(recorded, 20, what="the cancel to be recorded")
        assert (status["submitted_by"], status["executed_by"], status["cancelled_by"]) == ("bob", "mallory", "mallory")
        assert (await status_of(bob, mallorys))["submitted_by"] == "mallory"
        shown = wf(system, "history", bobs, url=env_url(system, "bob"))
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert any("submitted" in line and "bob" in line for line in lines), shown.stdout
        assert any("exec" in line and "mallory" in line for line in lines), shown.stdout
        assert any("cancel" in line and "mallory" in line for line in lines), shown.stdout
    finally:
        await mallory.close()
        await bob.close()


async def test_an_admin_person_is_recorded_by_name(system):
    """An admin is in WF (everything is theirs, as with admin.env); `wf` names them on each request,
    and a person's same claim is ignored."""
    assert wf(system, "user", "add", "dana", "--role", "admin").returncode == 0
    done = subprocess.run([sys.executable, "-m", "wf.cli", "--data-dir", str(system.data_dir), "submit", "-"],
                          input=json.dumps(sleep_workreq()), capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "WF_NATS_URL": env_url(system, "dana")})
    assert done.returncode == 0, done.stderr
    wf_id = done.stdout.split()[0]
    admin = await nats.connect(system.url)
    try:
        assert (await status_of(admin, wf_id))["submitted_by"] == "dana"
        # dana is in WF: she may do what only the admin may, e.g. read a service's stream directly
        dana = await nats.connect(env_url(system, "dana"))
        try:
            assert (await dana.jetstream().stream_info("WF_JOBS")).config.name == "WF_JOBS"
        finally:
            await dana.close()
    finally:
        await admin.close()
