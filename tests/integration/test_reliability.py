"""Idempotent submission, service replicas and `--sync always`, through the real system."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from schemas import Submitted, event_decoder
from services.common.bus import read_history
from services.common.topology import IDEMPOTENCY_BUCKET
from tests.chaos.harness import assert_clean, check_invariants, instances, run_workflows, sleep_workreq
from tests.conftest import RunningSystem, eventually, start_system
from wf import client

pytestmark = pytest.mark.integration


async def _submissions(nc, wf_id: str) -> int:  # type: ignore[no-untyped-def]
    msgs = await read_history(nc.jetstream(), wf_id)
    return sum(isinstance(event_decoder.decode(m.data), Submitted) for m in msgs)


async def test_a_retried_submit_returns_the_same_workflow(nc) -> None:  # type: ignore[no-untyped-def]
    body = sleep_workreq(blocks=1, jobs=1, seconds=1)
    first = await client.submit(nc, body, key="retry-1")
    again = await client.submit(nc, body, key="retry-1")
    other = await client.submit(nc, body, key="retry-2")
    assert again == first and first["verdict"] == "approved"
    assert other["id"] != first["id"]
    assert await _submissions(nc, first["id"]) == 1


async def test_concurrent_submits_with_one_key_make_one_workflow(nc) -> None:  # type: ignore[no-untyped-def]
    body = sleep_workreq(blocks=1, jobs=2, seconds=1)
    replies = await asyncio.gather(*(client.submit(nc, body, key="racing") for _ in range(8)))
    assert len({reply["id"] for reply in replies}) == 1
    assert all(reply["verdict"] == "approved" for reply in replies), replies  # each waited for the one verdict
    assert await _submissions(nc, replies[0]["id"]) == 1


async def test_a_key_reused_for_another_workreq_is_refused(nc) -> None:  # type: ignore[no-untyped-def]
    first = await client.submit(nc, sleep_workreq(blocks=1, jobs=1, seconds=1), key="reused")
    with pytest.raises(client.WfError) as err:
        await client.submit(nc, sleep_workreq(blocks=1, jobs=2, seconds=1), key="reused")
    assert err.value.code == 409 and first["id"] in err.value.message


async def test_a_rejected_submit_is_rejected_again_with_its_id(nc) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"name": "SleepDemo", "desc": "", "blocks": [
        {"desc": "", "rate_limit": 1, "jobs": [{"name": "diskErase", "desc": "", "args": {"machine": "aa01", "site": "aap"}}]}
    ]}).encode()
    ids = []
    for _ in range(2):
        with pytest.raises(client.WfError) as err:
            await client.submit(nc, body, key="rejected-once")
        assert err.value.code == 400 and err.value.body["verdict"] == "rejected"
        ids.append(err.value.body["id"])
    assert ids[0] == ids[1]


async def test_a_key_whose_first_attempt_stored_nothing_creates_the_workflow_on_retry(system: RunningSystem) -> None:
    """The first attempt claimed the key but was refused (423: stopped); the retry, once the stop is
    lifted, creates the workflow under the claimed id, once."""
    operator = await nats.connect(system.operator_url)
    admin = await nats.connect(system.url)
    kv = await operator.jetstream().key_value("wf_es")
    try:
        body = sleep_workreq(blocks=1, jobs=1, seconds=1)

        async def intake_says(code: int | None) -> bool:  # probes with a fresh key each: they bind nothing
            try:
                await client.submit(admin, body, attempts=1)
            except client.WfError as err:
                return err.code == code
            return code is None

        await kv.put("SleepDemo", b"stop")
        await eventually(lambda: intake_says(423), 10, what="the stop to reach intake")
        with pytest.raises(client.WfError) as err:
            await client.submit(admin, body, key="after-stop", attempts=1)
        assert err.value.code == 423
        await kv.put("SleepDemo", b"go")
        await eventually(lambda: intake_says(None), 10, what="the go to reach intake")
        reply = await client.submit(admin, body, key="after-stop", attempts=1)
        assert await _submissions(admin, reply["id"]) == 1
        assert (await client.submit(admin, body, key="after-stop"))["id"] == reply["id"]
    finally:
        await kv.put("SleepDemo", b"go")
        await operator.close()
        await admin.close()


async def test_submit_keys_are_kept_for_a_day(nc) -> None:  # type: ignore[no-untyped-def]
    """Not the stream's 2-minute duplicate window: the key bucket's own age limit."""
    status = await (await nc.jetstream().key_value(IDEMPOTENCY_BUCKET)).status()
    assert status.ttl is not None and status.ttl >= 24 * 3600


async def test_every_service_replicated_with_fsync_always(tmp_path: Path) -> None:
    """`wf up --replicas 2 --sync always`: two of each service answer, the server fsyncs every
    write, and workflows run exactly as with one of each (the projection equals a fresh fold)."""
    system = start_system(tmp_path, "--replicas", "2", "--sync", "always", "--time-scale", "0.1")
    try:
        assert 'sync_interval: "always"' in (system.data_dir / "nats-server.conf").read_text()
        nc = await nats.connect(system.url)
        try:
            for service in ("wf-intake", "wf-policy", "wf-executor", "wf-jobrunner", "wf-status"):
                assert await instances(nc, service) == 2, service
            wf_ids = await run_workflows(nc, 6, blocks=2, jobs=4)
            assert_clean(await check_invariants(nc, wf_ids, reruns_allowed=False), system)
        finally:
            await nc.close()
    finally:
        assert system.stop() == 0, system.log_tail()


async def test_a_workflow_is_never_both_approved_and_rejected(nats_server: str) -> None:
    """Whatever the duplicate window: the opposite verdict of a stored one is refused by JetStream
    (a `submitted` replayed after the policy file changed would otherwise bring it)."""
    from nats.js.errors import APIError

    from schemas import Approved, Rejected
    from services.common.bus import publish_event, wrong_last_sequence
    from services.common.topology import ensure_topology
    from services.policy.service import never_both

    nc = await nats.connect(nats_server)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        approved = Approved(id="WF1", at=1.0)
        await publish_event(js, approved, headers=never_both(approved))
        await publish_event(js, Approved(id="WF1", at=2.0), headers=never_both(approved))  # the same again: harmless
        rejected = Rejected(id="WF1", at=3.0, reason="changed policy")
        with pytest.raises(APIError) as err:
            await publish_event(js, rejected, headers=never_both(rejected))
        assert wrong_last_sequence(err.value)
    finally:
        await nc.close()


async def test_the_client_retries_a_submit_with_one_key(nats_server: str) -> None:
    """wf.client.submit (and so `wf submit`) retries 503 and 429 with the same Nats-Msg-Id, and
    gives up at once on other errors."""
    nc = await nats.connect(nats_server)
    keys: list[str] = []
    answers = [b"503", b"429", b""]

    async def responder(msg) -> None:  # type: ignore[no-untyped-def]
        keys.append((msg.headers or {}).get("Nats-Msg-Id", ""))
        code = answers.pop(0) if answers else b"400"
        if code:
            await nc.publish(msg.reply, b'{"error": {"code": %s, "message": "x"}}' % code,
                             headers={"Nats-Service-Error-Code": code.decode(), "Nats-Service-Error": "x"})
        else:
            await msg.respond(b'{"id": "WF1", "verdict": "approved"}')

    await nc.subscribe("wf.api.submit", cb=responder)
    try:
        assert await client.submit(nc, b"{}") == {"id": "WF1", "verdict": "approved"}
        assert len(keys) == 3 and len(set(keys)) == 1 and keys[0].startswith("wf-submit-")
        keys.clear()
        with pytest.raises(client.WfError) as err:
            await client.submit(nc, b"{}", key="mine")
        assert err.value.code == 400 and keys == ["mine"]
    finally:
        await nc.close()
