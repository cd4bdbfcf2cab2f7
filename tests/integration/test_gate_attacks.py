"""The gate, attacked by someone who holds a person's credential (client or operator).

Each test replays a hole found in a review (docs/security.md, "How the accounts close each hole")
against a real nats-server and real services, and checks the outcome a user cares about: work still
gets its verdict and runs only as approved, nothing of the services' traffic is visible, nothing a
person sends reaches a service except through `wf.api.*`."""

from __future__ import annotations

import asyncio
import json

import nats
import nats.js.errors
import pytest

from schemas import Approved, JobCompleted, encoder
from services.common.bus import last_event
from tests.conftest import REPO, eventually, wait_terminal
from wf import client

pytestmark = pytest.mark.integration
SLEEP = (REPO / "examples" / "sleep.json").read_bytes()
SERVICE_DURABLES = {"WF_EVENTS": ("policy", "executor", "status"), "WF_JOBS": ("jobrunner",)}


def long_sleeps(seconds: int = 3000) -> bytes:
    """Two blocks: a long sleep (seconds x the fixture's time scale of 0.01), then a short one."""
    return json.dumps({"name": "SleepDemo", "desc": "attack target", "blocks": [
        {"desc": "long", "rate_limit": 1, "jobs": [{"name": "sleep", "desc": "long", "args": {"seconds": str(seconds)}}]},
        {"desc": "after", "rate_limit": 1, "jobs": [{"name": "sleep", "desc": "after", "args": {"seconds": "1"}}]},
    ]}).encode()


async def durable_configs(admin: nats.aio.client.Client) -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    js = admin.jetstream()
    configs = {}
    for stream, names in SERVICE_DURABLES.items():
        for name in names:
            configs[(stream, name)] = (await js.consumer_info(stream, name)).config.as_dict()
    return configs


async def test_a_person_cannot_rewrite_or_delete_a_services_durable_consumer(system):
    """Hole 1: the nameless CONSUMER.CREATE with a service's durable name in its body updated it."""
    admin = await nats.connect(system.url)
    people = [await nats.connect(system.client_url), await nats.connect(system.operator_url)]
    try:
        before = await durable_configs(admin)
        hostile = {"filter_subject": "wf.evt.nothing.>", "ack_policy": "explicit", "deliver_policy": "new",
                   "max_ack_pending": 1}
        for nc in people:
            for stream, names in SERVICE_DURABLES.items():
                for name in names:
                    for body in ({"stream_name": stream, "config": {"name": name, **hostile}},
                                 {"stream_name": stream, "config": {"durable_name": name, **hostile}}):
                        for subject in (f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.CREATE.{stream}.{name}",
                                        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{name}",
                                        f"$JS.API.CONSUMER.DELETE.{stream}.{name}"):
                            try:
                                await nc.request(subject, json.dumps(body).encode(), timeout=0.5)
                            except nats.errors.Error:
                                pass  # refused (a permissions violation) or unanswered: either is fine
        assert await durable_configs(admin) == before, "a person changed a service's consumer"
        # and the gate still works end to end: a submit gets its verdict, an exec runs to the end
        reply = await client.submit(people[0], SLEEP)
        assert reply["verdict"] == "approved"
        await client.execute(people[0], reply["id"])
        assert (await wait_terminal(people[0], reply["id"]))["status"] == "completed"
    finally:
        for nc in (admin, *people):
            await nc.close()


async def test_a_person_sees_none_of_the_services_traffic(system):
    """Hole 2: every role shared `_INBOX.>`, so a client read the services' replies and deliveries live."""
    admin = await nats.connect(system.url)
    spy = await nats.connect(system.operator_url)
    seen: list[str] = []

    async def record(msg):  # type: ignore[no-untyped-def]
        seen.append(f"{msg.subject} reply={msg.reply}")

    try:
        await spy.subscribe("_INBOX.>", cb=record)
        await spy.flush()
        await spy.flush()
        # a whole workflow, submitted and run by the admin (WF account): every service works for it
        reply = await client.submit(admin, SLEEP)
        await client.execute(admin, reply["id"])
        assert (await wait_terminal(admin, reply["id"]))["status"] == "completed"
        await spy.flush()
        assert seen == [], f"a person saw service traffic: {seen[:5]}"
    finally:
        await spy.close()
        await admin.close()


async def test_a_forged_event_sent_straight_into_the_executors_inbox_never_arrives(system):
    """Hole 2: forged `job.completed` messages sent into an executor's ordered-consumer inbox let a
    workflow skip its gate jobs. Here the attacker even knows the exact inbox (the test reads it as
    admin); what a person publishes there stays in their own account."""
    admin = await nats.connect(system.url)
    attacker = await nats.connect(system.client_url)
    try:
        wf_id = (await client.submit(attacker, long_sleeps()))["id"]
        await client.execute(attacker, wf_id)

        async def executor_inbox():  # type: ignore[no-untyped-def]
            for consumer in await admin.jetstream().consumers_info("WF_EVENTS"):
                config = consumer.config
                if config.deliver_subject and config.filter_subject == f"wf.evt.{wf_id}.>":
                    return config.deliver_subject
            return None

        inbox = await eventually(executor_inbox, 20, what="the executor's ordered consumer on the workflow")

        async def long_job_running():  # type: ignore[no-untyped-def]
            status = await client.status(attacker, wf_id)
            return status["blocks"][0]["jobs"][0]["status"] == "running"

        await eventually(long_job_running, 20, what="the long job to run")
        forged = encoder.encode(JobCompleted(id=wf_id, at=1, block=0, job=0))
        for _ in range(20):
            await attacker.publish(inbox, forged, headers={"Nats-Msg-Id": "forged"})
            await attacker.publish(inbox, forged, reply="_INBOX.wedge")  # once wedged nats-py's read loop
        await attacker.flush()
        await asyncio.sleep(0)
        # the executor would start block 1 at once on a completed block 0; give it every chance to
        # (a status round trip through every service), then check it did not
        for _ in range(10):
            status = await client.status(attacker, wf_id)
            assert status["blocks"][0]["jobs"][0]["status"] == "running"
            assert status["blocks"][1]["status"] == "not_started", "a forged event moved the workflow on"
        assert (await nc_ping(attacker, "wf-intake")), "intake stopped answering"
        await client.cancel(attacker, wf_id)
        assert (await wait_terminal(attacker, wf_id))["status"] == "failed"
    finally:
        await attacker.close()
        await admin.close()


async def nc_ping(nc, service: str) -> bool:  # type: ignore[no-untyped-def]
    reply = await nc.request(f"$SRV.PING.{service}", b"", timeout=2)
    return json.loads(reply.data)["name"] == service


async def test_a_person_cannot_publish_into_the_views_or_the_services(system):
    """The views are read-only: nothing a person publishes is stored in them or reaches WF."""
    admin = await nats.connect(system.url)
    errors: list[str] = []

    async def record(exc):  # type: ignore[no-untyped-def]
        errors.append(str(exc).lower())

    person = await nats.connect(system.operator_url, error_cb=record)
    try:
        wf_id = (await client.submit(person, SLEEP))["id"]

        async def view_caught_up():  # type: ignore[no-untyped-def]
            # the view follows WF within milliseconds, not at once: count from after its last event
            try:
                await person.jetstream().get_last_msg("WF_EVENTS", f"wf.evt.{wf_id}.approved")
                return True
            except nats.js.errors.NotFoundError:
                return False

        await eventually(view_caught_up, 10, what="the people's view to hold the verdict")
        people_events = await person.jetstream().stream_info("WF_EVENTS")
        for subject in (f"wf.evt.{wf_id}.approved", "wf.view.evt.x.approved", "wf.view.mirror.status.M.x",
                        "$JS.wf.API.CONSUMER.CREATE.KV_wf_status", "$JS.API.STREAM.DELETE.WF_EVENTS",
                        "$JS.API.STREAM.PURGE.KV_wf_status", "wf.cmd.job.x.0.0"):
            await person.publish(subject, b'{"type": "approved", "id": "%s", "at": 1}' % wf_id.encode())
        await person.flush()

        async def refused():  # type: ignore[no-untyped-def]
            return sum("permissions violation" in e for e in errors) >= 7

        await eventually(refused, 5, what="every publish refused")
        after = await person.jetstream().stream_info("WF_EVENTS")
        assert after.state.messages == people_events.state.messages
    finally:
        await person.close()
        await admin.close()


async def test_foreign_clients_read_a_workflow_from_the_views(system):
    """nats-py's ordered consumer without naming the stream (it asks STREAM.NAMES), direct gets, the
    projection, and `nats sub 'wf.evt.>'` live, all with a client credential."""
    nc = await nats.connect(system.client_url)
    try:
        live = await nc.subscribe("wf.evt.>")
        await nc.flush()
        await nc.flush()
        reply = await client.submit(nc, SLEEP)
        wf_id = reply["id"]
        first_live = await live.next_msg(timeout=5)
        assert first_live.subject.startswith(f"wf.evt.{wf_id}.")
        await client.execute(nc, wf_id)
        assert (await wait_terminal(nc, wf_id))["status"] == "completed"
        js = nc.jetstream()
        sub = await js.subscribe(f"wf.evt.{wf_id}.>", ordered_consumer=True)  # no stream named
        subjects = []
        while not subjects or not subjects[-1].endswith(".workflow.completed"):
            subjects.append((await sub.next_msg(timeout=5)).subject)
        assert subjects[0] == f"wf.evt.{wf_id}.submitted"
        assert f"wf.evt.{wf_id}.approved" in subjects
        kv = await js.key_value("wf_status")

        async def projected():  # type: ignore[no-untyped-def]
            entry = await kv.get(wf_id)
            return entry.value and json.loads(entry.value)["status"] == "completed"

        await eventually(projected, 10, what="the projection's view")
    finally:
        await nc.close()


async def test_a_person_holds_a_bounded_number_of_consumers_that_expire(system):
    """A person cannot create unbounded or everlasting consumers on a view."""
    nc = await nats.connect(system.client_url)
    try:
        js = nc.jetstream()
        from nats.js.api import ConsumerConfig

        with pytest.raises(nats.js.errors.APIError):  # longer than the views allow
            await js.add_consumer("WF_EVENTS", ConsumerConfig(name="forever", inactive_threshold=10 * 24 * 3600.0))
        info = await js.add_consumer("WF_EVENTS", ConsumerConfig(name="mine"))
        assert 0 < info.config.inactive_threshold <= 300
        stream = await js.stream_info("WF_EVENTS")
        assert 0 < stream.config.max_consumers <= 1000
    finally:
        await nc.close()


async def test_the_callers_identity_is_the_servers_never_the_clients_claim(system):
    """Every request a person sends into `wf.api.*` carries the identity the server authenticated
    (`Nats-Request-Info`, added at the account boundary); a header of that name set by the client
    itself is replaced, so no one can claim to be someone else. (A responder inside WF stands in for
    a service here: the header is what every service will read to know who acts.)"""
    admin = await nats.connect(system.url)
    seen: list[dict] = []  # type: ignore[type-arg]

    async def respond(msg):  # type: ignore[no-untyped-def]
        seen.append(json.loads((msg.headers or {}).get("Nats-Request-Info", "{}")))
        await msg.respond(b"{}")

    await admin.subscribe("wf.api.identity_probe", cb=respond)
    await admin.flush()
    await admin.flush()
    forged = json.dumps({"acc": "WF", "user": "admin", "name": "admin"})
    try:
        for url, user in ((system.client_url, "client"), (system.operator_url, "operator")):
            person = await nats.connect(url)
            try:
                await person.request("wf.api.identity_probe", b"{}", timeout=2, headers={"Nats-Request-Info": forged})
            finally:
                await person.close()
            info = seen[-1]
            assert (info.get("acc"), info.get("user")) == ("PEOPLE", user), info
    finally:
        await admin.close()


async def test_a_client_cannot_answer_a_services_own_requests(system):
    """A service's requests (its event publishes, KV writes, last-event reads) are answered on its own
    inbox with a counter for token (services/common/requester.py): predictable. A client that knows
    the exact reply subjects (the test reads them as admin) sprays forged answers into them while it
    execs a workflow the policies rejected: a forged `approved` read, 404s for the rest. None of it
    may reach the service: the exec is refused as rejected, nothing is stored, and the admin sees no
    forged message in the service's inbox."""
    admin = await nats.connect(system.url)
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    attacker = await nats.connect(system.client_url, error_cb=on_error)
    seen: list[str] = []
    forged_arrived: list[str] = []

    async def watch(msg) -> None:  # type: ignore[no-untyped-def]
        seen.append(msg.subject)
        if msg.data.startswith(b'{"forged"') or (msg.headers or {}).get("Wf-Forged"):
            forged_arrived.append(msg.subject)

    try:
        await admin.subscribe("_INBOX_intake.>", cb=watch)
        await admin.flush()
        refused = json.dumps({"name": "SleepDemo", "desc": "rejected", "blocks": [
            {"rate_limit": 1, "jobs": [{"name": "validateDecom", "args": {"site": "aap", "type": "satellite"}}]}]}).encode()
        with pytest.raises(client.WfError) as rejected:
            await client.submit(attacker, refused)
        wf_id = rejected.value.body["id"]
        assert rejected.value.code == 400

        async def learned() -> str | None:
            return seen[-1] if seen else None

        last = await eventually(learned, 10, what="a reply to wf-intake's requests")
        prefix, _, token = last.rpartition(".")
        approved = encoder.encode(Approved(id=wf_id, at=1.0))
        headers_ok = {"Nats-Subject": f"wf.evt.{wf_id}.approved", "Nats-Sequence": "1", "Wf-Forged": "1",
                      "Nats-Time-Stamp": "2026-01-01T00:00:00.000000000Z"}

        async def spray() -> None:
            for n in range(int(token) + 1, int(token) + 200):
                await attacker.publish(f"{prefix}.{n}", approved, headers=headers_ok)
                await attacker.publish(f"{prefix}.{n}", b"", headers={"Status": "404", "Wf-Forged": "1"})
            await attacker.flush()

        sprayer = asyncio.create_task(spray())
        with pytest.raises(client.WfError) as exec_refused:
            await client.execute(attacker, wf_id)
        await sprayer
        assert exec_refused.value.code == 412 and "rejected" in exec_refused.value.message
        assert await last_event(admin.jetstream(), f"wf.evt.{wf_id}.exec_requested") is None
        await eventually(lambda: _has(errors), 5, what="the permissions violation of the forged answers")
        await admin.flush()
        assert not forged_arrived, f"a client's forged answer reached wf-intake's inbox: {forged_arrived[:3]}"
        assert (await nc_ping(attacker, "wf-intake")), "intake stopped answering"
    finally:
        await attacker.close()
        await admin.close()


async def _has(found: list[Exception]) -> bool:
    return bool(found)
