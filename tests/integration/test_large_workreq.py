"""A WorkReq larger than the server's max payload works end to end (issue #7): sent in parts to
`wf.api.upload`, stored in the object store `wf_workreqs`, its status written as a summary.

The system runs with `--max-payload 256KB`, so a 4,500-job WorkReq (about 600 KB) is over it."""

from __future__ import annotations

import json
import os
import signal

import nats
import nats.js.errors
import pytest

from schemas import Submitted, event_decoder
from services.common.bus import last_event
from tests.conftest import eventually, processes, start_system
from wf import client

pytestmark = pytest.mark.integration

BLOCKS, PER_BLOCK = 3, 1500
MAX_PAYLOAD = 256 * 1024


def large_workreq(tag: str, per_block: int = PER_BLOCK) -> bytes:
    jobs = [{"name": "sleep", "desc": f"{tag} job {j}, a description to make the WorkReq large", "args": {"seconds": "1"}}
            for j in range(per_block)]
    return json.dumps({"name": "SleepDemo", "desc": tag,
                       "blocks": [{"desc": f"block {b}", "rate_limit": 500, "jobs": jobs} for b in range(BLOCKS)]}).encode()


@pytest.fixture(scope="module")
def small_payload_system(tmp_path_factory):  # type: ignore[no-untyped-def]
    running = start_system(tmp_path_factory.mktemp("wf"), "--time-scale", "0", "--runners", "2",
                           "--max-payload", "256KB", env={"WF_MAX_REQUEST_BYTES": str(1024 * 1024)})
    yield running
    assert running.stop() == 0, running.log_tail()


async def test_a_workreq_over_the_max_payload_is_approved_runs_and_reports(small_payload_system):
    system = small_payload_system
    nc = await nats.connect(system.client_url)
    admin = await nats.connect(system.url)
    try:
        body = large_workreq("large")
        assert nc.max_payload == MAX_PAYLOAD and len(body) > 1.5 * MAX_PAYLOAD  # three parts

        reply = await client.submit(nc, body)
        assert reply["verdict"] == "approved", reply
        wf_id = reply["id"]

        # the submitted event fits: it says where the WorkReq is, and the object holds exactly it
        js = admin.jetstream()
        ev = event_decoder.decode((await last_event(js, f"wf.evt.{wf_id}.submitted")).data)
        assert isinstance(ev, Submitted) and ev.req is None and ev.req_stored is not None
        assert ev.req_stored.workreq == "SleepDemo" and ev.req_stored.bucket == "wf_workreqs"
        stored = await (await js.object_store("wf_workreqs")).get(wf_id)
        assert json.loads(stored.data) == json.loads(body) | {"max_failures": None}

        await client.execute(nc, wf_id)
        # mid-run, wf-status dies: its restart rebuilds the summary's jobs from WF_EVENTS
        kv = await js.key_value("wf_status")

        async def some_done():  # type: ignore[no-untyped-def]
            try:
                value = json.loads((await kv.get(wf_id)).value)
            except nats.js.errors.KeyNotFoundError:  # not projected yet (wf-status waits up to 20 ms for more)
                return False
            return value["blocks"][0]["job_counts"]["completed"] > 0

        await eventually(some_done, 30, what="the first jobs completed")
        # Frozen until the workflow has ended, then killed: its restart meets only events the
        # history it rebuilds already holds, and must still write that newer status over KV's summary
        [status_pid] = processes(system.proc.pid)["status"]
        os.kill(status_pid, signal.SIGSTOP)
        try:
            async def workflow_ended():  # type: ignore[no-untyped-def]
                return any([await last_event(js, f"wf.evt.{wf_id}.workflow.{end}") for end in ("completed", "failed")])

            await eventually(workflow_ended, 60, what="the executor to end the workflow")
        finally:
            os.kill(status_pid, signal.SIGKILL)

        seen: list[object] = ["nothing"]

        async def ended():  # type: ignore[no-untyped-def]
            try:  # wf-status answers again once `wf up` has restarted it (a request just after the
                # kill may still have gone to the dead one: ask again soon)
                status = await client.status(nc, wf_id, timeout_s=2)
            except client.Unreachable as err:
                seen[0] = err
                return None
            seen[0] = {k: status[k] for k in ("status", "blocks") if k in status}
            return status if status["status"] in ("completed", "failed") else None

        try:  # well within the 30 s after which events the killed process held are redelivered
            final = await eventually(ended, 20, what="the large workflow's status to show it ended")
        except BaseException:
            print("last status seen:", seen[0], "\n--- wf up log ---\n", system.log_tail(40))
            raise
        assert final["status"] == "completed" and not final["had_errors"], final
        assert final["jobs_omitted"] is True
        assert [b["job_counts"] for b in final["blocks"]] == [
            {"not_started": 0, "running": 0, "completed": PER_BLOCK, "failed": 0}] * BLOCKS
        assert all(b["jobs"] == [] and b["status"] == "completed" for b in final["blocks"])
        stored_status = await kv.get(wf_id)
        assert len(stored_status.value) < MAX_PAYLOAD and json.loads(stored_status.value) == final

        # the restart rebuilt the history once, not once per batch of the backlog it then consumed
        async def backlog_consumed():  # type: ignore[no-untyped-def]
            return (await js.consumer_info("WF_EVENTS", "status")).num_pending == 0

        await eventually(backlog_consumed, 30, what="wf-status to consume its backlog")
        rebuilds = [line for line in system.log_tail(10_000).splitlines()
                    if "status_rebuilt_from_history" in line and wf_id in line]
        assert len(rebuilds) == 1, rebuilds

        # every job ran, each exactly once: one `completed` per job in WF_EVENTS
        info = await js.stream_info("WF_EVENTS", subjects_filter=f"wf.evt.{wf_id}.job.*.*.completed")
        assert len(info.state.subjects or {}) == BLOCKS * PER_BLOCK
        assert all(n == 1 for n in (info.state.subjects or {}).values())
    finally:
        await nc.close()
        await admin.close()


async def test_an_uploaded_submit_is_idempotent_and_a_missing_part_is_a_clear_400(small_payload_system):
    nc = await nats.connect(small_payload_system.client_url)
    try:
        body = large_workreq("twice")
        first = await client.submit(nc, body, key="same-key")
        again = await client.submit(nc, body, key="same-key")  # a second upload, the same key: one workflow
        assert first == again and first["verdict"] == "approved"

        headers = await client.upload(nc, body)
        headers["Wf-Upload-Parts"] = str(int(headers["Wf-Upload-Parts"]) + 1)  # one part more than sent
        with pytest.raises(client.WfError) as err:
            await client.call(nc, "wf.api.submit", b"", headers=headers)
        assert err.value.code == 400 and "has no part" in err.value.message

        for bad in ({"Wf-Upload": "../x", "Wf-Upload-Part": "0"}, {"Wf-Upload": "ok", "Wf-Upload-Part": "-1"},
                    {"Wf-Upload": "ok"}):
            with pytest.raises(client.WfError) as err:
                await client.call(nc, "wf.api.upload", b"{}", headers=bad)
            assert err.value.code == 400
        with pytest.raises(client.WfError) as err:  # a part that leaves no room for KV's headers
            await client.call(nc, "wf.api.upload", b"x" * (MAX_PAYLOAD - 1024), headers={"Wf-Upload": "ok", "Wf-Upload-Part": "0"})
        assert err.value.code == 413 and "parts may have at most" in err.value.message
        with pytest.raises(client.WfError) as err:  # an upload and a body at once
            await client.call(nc, "wf.api.submit", b"{}", headers={"Wf-Upload": "ok", "Wf-Upload-Parts": "1"})
        assert err.value.code == 400 and "empty body" in err.value.message
    finally:
        await nc.close()


async def test_a_workreq_over_the_request_limit_is_refused_413_after_its_upload(small_payload_system):
    nc = await nats.connect(small_payload_system.client_url)
    try:
        body = large_workreq("too large", per_block=3500)
        assert len(body) > 1024 * 1024
        with pytest.raises(client.WfError) as err:
            await client.submit(nc, body)
        assert err.value.code == 413 and "limit of 1048576 bytes (WF_MAX_REQUEST_BYTES)" in err.value.message
    finally:
        await nc.close()
