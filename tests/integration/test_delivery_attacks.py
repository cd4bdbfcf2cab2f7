"""Attacks through a push consumer's deliveries, and through the emergency-stop gate's headers.

nats-server does not check a push consumer's deliver subject against its creator's publish
permissions: whoever may create a consumer, and has (or finds) a literal subscription on a subject,
makes the server itself publish stored messages there, however often it redelivers them. Found by
attacking the people/identity work; each test attacks through a real server as the attacker would."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from services.common.topology import VIEW_MAX_PER_SUBJECT
from tests.conftest import eventually, processes, start_system
from wf import client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def system(tmp_path_factory):  # type: ignore[no-untyped-def]
    running = start_system(tmp_path_factory.mktemp("delivery"), "--time-scale", "0.01",
                           env={"WF_PEOPLE_STORE_BYTES": str(64 * 1024 * 1024)})
    yield running
    assert running.stop() == 0, running.log_tail()


def service_url(system, role: str) -> str:  # type: ignore[no-untyped-def]
    pid = sorted(processes(system.proc.pid)[role])[0]
    env = dict(line.split("=", 1) for line in open(f"/proc/{pid}/environ").read().split("\0") if "=" in line)
    return env["WF_NATS_URL"]


def workreq(seconds: int) -> bytes:
    return json.dumps({"name": "SleepDemo", "desc": "x", "blocks": [
        {"desc": "b", "rate_limit": 1, "jobs": [{"name": "sleep", "args": {"seconds": str(seconds)}}]}]}).encode()


async def test_a_compromised_runner_cannot_reach_the_api_through_a_push_consumer(system):
    """The runner may not publish to `wf.api.*`. It stores a cancel body (and a claimed actor) as a
    job event of its own, then has a push consumer deliver it into `wf.api.cancel`, where the micro
    endpoint's queue subscription gives the consumer interest; and a WorkReq into `wf.api.submit`.
    A service acts only on requests: the workflow runs on, nothing is submitted."""
    admin = await nats.connect(system.url)
    runner = await nats.connect(service_url(system, "jobrunner"), inbox_prefix="_INBOX_jobrunner")
    try:
        victim = (await client.submit(admin, workreq(3000)))["id"]
        await client.execute(admin, victim)

        async def running() -> bool:
            return (await client.status(admin, victim))["status"] == "running"

        await eventually(running, 20, what="the victim to run")
        js = runner.jetstream()
        await js.publish("wf.evt.ATTACK.job.0.0.completed", json.dumps({"id": victim}).encode(),
                         headers={"Wf-Actor": "alice"})
        await js.publish("wf.evt.ATTACK.job.0.1.completed", workreq(1))
        for n, (target, subject) in enumerate((("wf.api.cancel", "wf.evt.ATTACK.job.0.0.>"),
                                               ("wf.api.submit", "wf.evt.ATTACK.job.0.1.>"))):
            config = {"stream_name": "WF_EVENTS", "config": {
                "name": f"attack{n}", "deliver_subject": target, "deliver_group": "q", "filter_subject": subject,
                "ack_policy": "explicit", "max_deliver": 3, "ack_wait": 200_000_000, "deliver_policy": "all",
                "inactive_threshold": 10_000_000_000}}
            created = json.loads((await runner.request("$JS.API.CONSUMER.CREATE.WF_EVENTS.attack" + str(n),
                                                        json.dumps(config).encode(), timeout=3)).data)
            assert "error" not in created, created  # the server lets it: the services must not act on it

        async def delivered_and_refused() -> bool:
            infos = [await js.consumer_info("WF_EVENTS", f"attack{n}") for n in range(2)]
            return all(info.delivered.stream_seq > 0 for info in infos)

        await eventually(delivered_and_refused, 10, what="the consumers to deliver into the API")
        await eventually(lambda: _logged(system, "request_refused"), 10, what="the services to refuse the deliveries")
        status = await client.status(admin, victim)
        assert status["status"] == "running" and status["cancelled_by"] == "", status
        submitted = await admin.request("$JS.API.STREAM.INFO.WF_EVENTS",
                                        json.dumps({"subjects_filter": "wf.evt.*.submitted"}).encode(), timeout=3)
        assert len(json.loads(submitted.data)["state"].get("subjects") or {}) == 1, "a workflow was submitted by a delivery"
    finally:
        await admin.request("wf.api.cancel", json.dumps({"id": victim}).encode(), timeout=5)
        await runner.close()
        await admin.close()


async def _logged(system, event: str) -> bool:  # type: ignore[no-untyped-def]
    return event in system.log_path.read_text(errors="replace")


async def test_a_person_redelivering_into_the_events_view_is_bounded(system):
    """A client subscribes literally to a subject of the people's WF_EVENTS view (`wf.evt.>` is
    theirs to read) and has a push consumer on the `wf_status` view redeliver there every 50 ms,
    never acknowledging: the view keeps at most VIEW_MAX_PER_SUBJECT copies of any subject, the
    PEOPLE account's store is capped (WF_PEOPLE_STORE_BYTES), and WF's own stream never notices."""
    person = await nats.connect(system.client_url)
    admin = await nats.connect(system.url)
    try:
        for _ in range(3):
            await client.submit(person, workreq(1))

        async def never_ack(msg) -> None:  # type: ignore[no-untyped-def]
            return None

        await person.subscribe("wf.evt.ZZZ.spam", cb=never_ack)
        await person.flush()
        wf_before = (await admin.jetstream().stream_info("WF_EVENTS")).state.messages
        config = {"stream_name": "KV_wf_status", "config": {
            "deliver_subject": "wf.evt.ZZZ.spam", "ack_policy": "explicit", "ack_wait": 50_000_000, "max_deliver": -1,
            "deliver_policy": "all", "inactive_threshold": 3_000_000_000}}
        created = json.loads((await person.request("$JS.API.CONSUMER.CREATE.KV_wf_status", json.dumps(config).encode(),
                                                    timeout=3)).data)
        assert "error" not in created, created
        js = person.jetstream()

        async def capped() -> dict | None:  # type: ignore[type-arg]
            info = await person.request("$JS.API.STREAM.INFO.WF_EVENTS", json.dumps({"subjects_filter": ">"}).encode(),
                                        timeout=3)
            subjects = json.loads(info.data)["state"].get("subjects") or {}
            junk = {s: n for s, n in subjects.items() if s.startswith("$KV.wf_status.")}
            return junk if junk and all(n == VIEW_MAX_PER_SUBJECT for n in junk.values()) else None

        junk = await eventually(capped, 20, what="the redeliveries to reach the per-subject cap")
        assert all(n <= VIEW_MAX_PER_SUBJECT for n in junk.values())
        account = json.loads((await person.request("$JS.API.INFO", b"", timeout=3)).data)
        assert account["limits"]["max_storage"] == 64 * 1024 * 1024, account["limits"]
        assert (await admin.jetstream().stream_info("WF_EVENTS")).state.messages == wf_before
        assert (await js.stream_info("WF_EVENTS")).config.max_msgs_per_subject == VIEW_MAX_PER_SUBJECT
    finally:
        await person.close()
        await admin.close()


async def _last_headers(admin, name: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    last = await admin.request("$JS.API.DIRECT.GET.KV_wf_es", json.dumps({"last_by_subj": f"$KV.wf_es.{name}"}).encode(),
                               timeout=3)
    return dict(last.headers or {})


async def test_the_gate_writes_only_the_kv_protocols_headers(system):
    """Look-alike identity headers, a TTL that would make a stop and its record vanish, and a message
    id that would swallow a later stop as a duplicate never reach the bucket; a KV operation other
    than DEL or PURGE is refused; a stop takes names, not subjects."""
    admin = await nats.connect(system.url)
    operator = await nats.connect(system.operator_url)
    try:
        await operator.request("$KV.wf_es.HdrA", b"stop", timeout=3,
                               headers={"WF-BY": "bob", "wf-at": "1999", "Nats-TTL": "1s", "Nats-Msg-Id": "once"})
        headers = await _last_headers(admin, "HdrA")
        assert [v for k, v in headers.items() if k.lower() == "wf-by"] == ["operator"], headers
        assert not any(k.lower() in ("nats-ttl", "nats-msg-id", "wf-at") and k != "Wf-At" for k in headers), headers
        again = json.loads((await operator.request("$KV.wf_es.HdrA", b"stop", timeout=3,
                                                   headers={"Nats-Msg-Id": "once"})).data)
        assert not again.get("duplicate"), again
        for bad in ({"KV-Operation": "ROLLUP"}, {"Nats-Rollup": "all"}, {"nats-rollup": "ALL"}):
            answer = json.loads((await operator.request("$KV.wf_es.HdrA", b"go", timeout=3, headers=bad)).data)
            assert "error" in answer, (bad, answer)
        for key in ("a.b", "x" * 200):
            answer = json.loads((await operator.request(f"$KV.wf_es.{key}", b"stop", timeout=3)).data)
            assert answer["error"]["code"] == 400, answer
    finally:
        await operator.close()
        await admin.close()


async def test_one_operators_flood_does_not_hold_back_anothers_stop(system):
    """The gate takes writes from each sender in turn: another operator's stop, sent after a flood of
    200 writes is already queued, is written before the flood is through (and the flooder is told
    to wait once 64 of theirs are queued)."""
    admin = await nats.connect(system.url)
    flooder = await nats.connect(system.operator_url)
    other_url = json.loads(await asyncio.to_thread(_add_operator, system))
    other = await nats.connect(other_url)
    try:
        inbox = flooder.new_inbox()
        answers: list[dict] = []  # type: ignore[type-arg]

        async def collect(msg) -> None:  # type: ignore[no-untyped-def]
            answers.append(json.loads(msg.data))

        await flooder.subscribe(inbox, cb=collect)
        for n in range(200):
            await flooder.publish(f"$KV.wf_es.Flood{n % 5}", b"stop", reply=inbox)
        await flooder.flush()
        ack = json.loads((await other.request("$KV.wf_es.UrgentStop", b"stop", timeout=10)).data)
        await eventually(lambda: _count(answers, 200), 30, what="every flood write answered")
        written = [a["seq"] for a in answers if "seq" in a]
        refused = [a for a in answers if a.get("error", {}).get("code") == 429]
        assert refused, "no write of the flood was refused"
        assert ack["seq"] < max(written), (ack, max(written))
    finally:
        await other.close()
        await flooder.close()
        await admin.close()


def _add_operator(system) -> str:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-m", "wf.cli", "--data-dir", str(system.data_dir), "user", "add", "urgent",
                           "--role", "operator"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.dumps((system.data_dir / "users" / "urgent.env").read_text().strip().partition("=")[2])


async def _count(answers: list, n: int) -> bool:  # type: ignore[type-arg]
    return len(answers) >= n
