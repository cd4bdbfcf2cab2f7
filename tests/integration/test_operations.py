"""docs/operations.md, recipe by recipe: the same operations with nats-py, against a running system."""

from __future__ import annotations

import json
import re

import nats.js.errors
import pytest

from tests.conftest import REPO, eventually, wait_terminal
from wf import client
from wf.client import WfError
from wf.up import ping_services

pytestmark = pytest.mark.integration
DOC = (REPO / "docs" / "operations.md").read_text()
SLEEP = (REPO / "examples" / "sleep.json").read_bytes()
# long enough (50 s x the module system's time scale 0.01 = 0.5 s per job) to see its lease while it runs
SLEEP_LONG = json.dumps({"name": "SleepDemo", "desc": "lease", "blocks": [
    {"desc": "", "rate_limit": 1, "jobs": [{"name": "sleep", "desc": "", "args": {"seconds": "50"}}] * 2}]}).encode()


def recipes() -> dict[str, str]:
    """recipe id -> the commands under it."""
    parts = re.split(r"<!-- recipe: ([\w-]+) -->", DOC)
    return {parts[i]: parts[i + 1].split("```")[1] for i in range(1, len(parts), 2)}


def test_every_recipe_has_a_test_here():
    tested = {name.removeprefix("test_recipe_").replace("_", "-") for name in globals() if name.startswith("test_recipe_")}
    assert set(recipes()) == tested


async def test_every_name_the_recipes_use_exists(nc):
    js = nc.jetstream()
    text = "\n".join(recipes().values())
    for stream in set(re.findall(r"\b(WF_[A-Z]+)\b", text)):
        await js.stream_info(stream)
    for stream, consumer in re.findall(r"consumer info (WF_[A-Z]+) (\w+)", text):
        await js.consumer_info(stream, consumer)
    for bucket in set(re.findall(r"kv \w+ (wf_\w+)", text)):
        await js.key_value(bucket)
    services = set(re.findall(r"\b(wf-[a-z]+)\b", text))
    assert services == {"wf-intake", "wf-policy", "wf-executor", "wf-status", "wf-jobrunner"}
    assert services <= set(await ping_services(nc, wait_s=1.0))
    for subject in re.findall(r"nats req (wf\.api\.\w+)", text):
        assert subject in {"wf.api.submit", "wf.api.exec", "wf.api.status", "wf.api.cancel", "wf.api.approve",
                           "wf.api.deny", "wf.api.pause", "wf.api.resume"}


async def run_one(nc) -> str:
    reply = await client.submit(nc, SLEEP)
    await client.execute(nc, reply["id"])
    assert (await wait_terminal(nc, reply["id"]))["status"] == "completed"
    return reply["id"]


async def test_recipe_submit_exec_status(nc):
    reply = json.loads((await nc.request("wf.api.submit", SLEEP, timeout=5)).data)
    assert reply["verdict"] == "approved"
    assert json.loads((await nc.request("wf.api.exec", json.dumps({"id": reply["id"]}).encode(), timeout=5)).data) == {"id": reply["id"]}
    status = json.loads((await nc.request("wf.api.status", json.dumps({"id": reply["id"]}).encode(), timeout=5)).data)
    assert status["id"] == reply["id"]
    error = await nc.request("wf.api.exec", json.dumps({"id": reply["id"]}).encode(), timeout=5)
    assert error.headers["Nats-Service-Error-Code"] == "409"
    assert json.loads(error.data)["error"]["code"] == 409
    idle = json.loads((await nc.request("wf.api.submit", SLEEP, timeout=5)).data)["id"]
    cancelled = await nc.request("wf.api.cancel", json.dumps({"id": idle}).encode(), timeout=5)
    assert json.loads(cancelled.data) == {"id": idle}
    refused = await nc.request("wf.api.exec", json.dumps({"id": idle}).encode(), timeout=5)
    assert json.loads(refused.data)["error"] == {"code": 409, "message": f"workflow {idle} was cancelled"}


async def test_recipe_watch_workflow(nc):
    reply = await client.submit(nc, SLEEP)
    seen: list[str] = []

    async def record(msg):
        seen.append(msg.subject.removeprefix(f"wf.evt.{reply['id']}."))

    sub = await nc.subscribe(f"wf.evt.{reply['id']}.>", cb=record)
    await nc.flush()
    await nc.flush()
    await client.execute(nc, reply["id"])

    async def ended():
        return "workflow.completed" in seen

    await eventually(ended, what="the live events")
    await sub.unsubscribe()
    assert seen[0] == "exec_requested" and "block.0.started" in seen and "job.0.0.completed" in seen


async def test_recipe_event_history(nc):
    wf_id = await run_one(nc)
    js = nc.jetstream()
    sub = await js.subscribe(f"wf.evt.{wf_id}.>", stream="WF_EVENTS", ordered_consumer=True)  # what `stream view` does
    subjects = []
    while True:
        msg = await sub.next_msg(timeout=5)
        subjects.append(msg.subject)
        if msg.metadata.num_pending == 0:
            break
    await sub.unsubscribe()
    assert subjects[0] == f"wf.evt.{wf_id}.submitted" and subjects[-1] == f"wf.evt.{wf_id}.workflow.completed"
    info = await js.stream_info("WF_EVENTS", subjects_filter=f"wf.evt.{wf_id}.>")  # `stream subjects`
    assert info.state.subjects[f"wf.evt.{wf_id}.job.0.0.completed"] == 1


async def test_recipe_status_kv(nc):
    kv = await nc.jetstream().key_value("wf_status")
    watcher = await kv.watchall()  # `kv watch wf_status`
    wf_id = await run_one(nc)
    final = None
    while final is None:
        entry = await watcher.updates(timeout=10)
        if entry is not None and entry.key == wf_id and json.loads(entry.value)["status"] == "completed":
            final = json.loads(entry.value)
    await watcher.stop()
    assert json.loads((await kv.get(wf_id)).value) == final  # `kv get`
    assert wf_id in await kv.keys()  # `kv ls`


async def test_recipe_emergency_stop(nc):
    es = await nc.jetstream().key_value("wf_es")
    await es.put("SleepDemo", b"stop")
    try:
        async def refused():
            try:
                await client.submit(nc, SLEEP)
            except WfError as err:
                return err.code == 423
            return False

        await eventually(refused, what="423 after the stop")
        assert "SleepDemo" in await es.keys()
    finally:
        await es.put("SleepDemo", b"go")

    async def accepted():
        try:
            return (await client.submit(nc, SLEEP))["verdict"] == "approved"
        except WfError:
            return False

    await eventually(accepted, what="submissions after go")


async def test_recipe_token_buckets(nc):
    kv = await nc.jetstream().key_value("wf_buckets")
    await kv.put("diskEraseSatellite", b'{"tokens": 0, "at": 1}')
    assert json.loads((await kv.get("diskEraseSatellite")).value)["tokens"] == 0
    await kv.delete("diskEraseSatellite")
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get("diskEraseSatellite")


async def test_recipe_consumers(nc):
    js = nc.jetstream()
    await run_one(nc)
    names = {c.name for c in await js.consumers_info("WF_EVENTS")}  # `consumer report WF_EVENTS`
    assert {"policy", "executor", "status"} <= names
    runner = await js.consumer_info("WF_JOBS", "jobrunner")
    assert runner.num_redelivered >= 0 and runner.delivered.stream_seq > 0
    info = await js.stream_info("WF_JOBS")
    assert info.state.messages >= 0


async def test_recipe_leases(nc):
    js = nc.jetstream()
    reply = await client.submit(nc, SLEEP_LONG, key="recipe-leases")
    again = json.loads((await nc.request("wf.api.submit", SLEEP_LONG, timeout=5,
                                         headers={"Nats-Msg-Id": "recipe-leases"})).data)
    assert again == reply
    await client.execute(nc, reply["id"])
    leases = await js.key_value("wf_leases")

    async def owner():
        try:
            return json.loads((await leases.get(reply["id"])).value)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None

    held = await eventually(owner, 10, what="the running workflow's lease")
    assert {"executor", "host", "pid", "token"} <= set(held)
    await wait_terminal(nc, reply["id"])
    assert await eventually(lambda: _no_lease(leases, reply["id"]), 10, what="the lease to be released")


async def _no_lease(leases, wf_id):
    try:
        entry = await leases.get(wf_id)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return True
    return not entry.value


async def test_recipe_two_person_rule(nc):
    """The endpoints answer as the recipe says (this system's policies ask no approval: 409 naming it);
    the whole rule, with requireApproval configured, is tests/integration/test_approval.py."""
    wf_id = (await client.submit(nc, SLEEP))["id"]
    for subject in ("wf.api.approve", "wf.api.deny"):
        msg = await nc.request(subject, json.dumps({"id": wf_id, "comment": "checked the site"}).encode(), timeout=5)
        assert msg.headers["Nats-Service-Error-Code"] == "409", msg.data
        assert "needs no approval" in json.loads(msg.data)["error"]["message"]
    kv = await nc.jetstream().key_value("wf_people")
    assert (await kv.get("operator")).value == b"operator"
    await client.execute(nc, wf_id)
    sub = await nc.subscribe(f"wf.evt.{wf_id}.approval.>")  # the recipe's subject is a valid filter
    await sub.unsubscribe()


async def test_recipe_pause_resume(nc):
    reply = await client.submit(nc, SLEEP_LONG)
    wf_id = reply["id"]
    await client.execute(nc, wf_id)
    body = json.dumps({"id": wf_id}).encode()
    sub = await nc.subscribe("wf.evt.*.paused")  # the recipe's subject is a valid filter
    assert json.loads((await nc.request("wf.api.pause", body, timeout=5)).data) == {"id": wf_id}
    assert (await sub.next_msg(timeout=5)).subject == f"wf.evt.{wf_id}.paused"
    await sub.unsubscribe()

    async def paused():
        status = json.loads((await nc.request("wf.api.status", body, timeout=5)).data)
        return status if status["status"] in ("paused", "completed") else None

    status = await eventually(paused, 5, what="paused")
    assert status["status"] == "paused" and status["paused_by"] == "admin", status
    assert json.loads((await nc.request("wf.api.resume", body, timeout=5)).data) == {"id": wf_id}
    again = await nc.request("wf.api.resume", body, timeout=5)
    assert again.headers["Nats-Service-Error-Code"] == "409"
    assert (await wait_terminal(nc, wf_id))["status"] == "completed"

    kv = await nc.jetstream().key_value("wf_es")
    await kv.put("SleepDemo", b"pause")
    try:
        async def refused():
            answer = await nc.request("wf.api.submit", SLEEP, timeout=5)
            return (answer.headers or {}).get("Nats-Service-Error-Code") == "423"

        await eventually(refused, 5, what="423 under pause")
    finally:
        await kv.put("SleepDemo", b"go")
    await eventually(lambda: _submit_ok(nc), 5, what="submits accepted after go")


async def _submit_ok(nc) -> bool:
    answer = await nc.request("wf.api.submit", SLEEP, timeout=5)
    return "Nats-Service-Error-Code" not in (answer.headers or {})


async def test_recipe_services(nc):
    assert await ping_services(nc, wait_s=1.0) == {"wf-intake": 1, "wf-policy": 1, "wf-executor": 1, "wf-status": 1, "wf-jobrunner": 2}
    info = json.loads((await nc.request("$SRV.INFO.wf-intake", b"", timeout=2)).data)
    assert info["version"] and {e["subject"] for e in info["endpoints"]} == {
        "wf.api.submit", "wf.api.exec", "wf.api.cancel", "wf.api.upload", "wf.api.approve", "wf.api.deny",
        "wf.api.pause", "wf.api.resume"}
    await client.submit(nc, SLEEP)
    stats = json.loads((await nc.request("$SRV.STATS.wf-intake", b"", timeout=2)).data)
    submit = next(e for e in stats["endpoints"] if e["name"] == "submit")
    assert submit["num_requests"] >= 1 and submit["processing_time"] > 0
    answers = []
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish("$SRV.PING.wf-jobrunner", b"", reply=inbox)
    for _ in range(2):
        answers.append(json.loads((await sub.next_msg(timeout=2)).data)["id"])
    await sub.unsubscribe()
    assert len(set(answers)) == 2  # one per runner process
