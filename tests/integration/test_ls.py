"""`wf ls` filters through a real server, as a person (the client credential reads PEOPLE's view of
`wf_status`): workflows completed, failed, cancelled, running a long sleep (one of them retrying),
not executed, rejected, by two people; plus values written straight into the bucket for what other
features make (paused, awaiting approval) and for age (`--since`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time

import nats
import pytest

from schemas import JobFailed, encoder, event_subject
from services.common.ids import encode, id_time_s
from services.inventory import load_inventory
from tests.conftest import REPO, eventually, wait_terminal
from wf import client
from wf.client import WfError
from wf.erase import erase_satellite_workreq

pytestmark = pytest.mark.integration
STUCK_S = 4


def wf_ls(system, *args: str, url: str | None = None) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    env = {**os.environ, "WF_NATS_URL": url or system.client_url}
    done = subprocess.run([sys.executable, "-m", "wf.cli", "--data-dir", str(system.data_dir), "ls", "--json",
                           "--limit", "100", *args], capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ids(system, *args: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [s["id"] for s in wf_ls(system, *args)]


def sleep_workreq(seconds: int) -> bytes:
    return json.dumps({"name": "SleepDemo", "desc": "ls", "blocks": [
        {"desc": "b", "jobs": [{"name": "sleep", "args": {"seconds": str(seconds)}}]}]}).encode()


async def started(nc, wf_id: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    async def probe():  # type: ignore[no-untyped-def]
        status = await client.status(nc, wf_id)
        return status if status["blocks"][0]["jobs"][0]["status"] == "running" else None
    return await eventually(probe, what=f"{wf_id} running")


async def test_ls_filters_as_a_person(system):
    admin = await nats.connect(system.url)
    alice = await nats.connect(system.client_url)  # two distinct people
    bob = await nats.connect(system.operator_url)
    w = {}
    try:
        # old values written straight into the bucket (as other features will make them): paused, and
        # approved but waiting for a second person's approval; submitted three hours ago
        kv = await admin.jetstream().key_value("wf_status")
        old_ms = int((time.time() - 3 * 3600) * 1000)
        for key, extra in (("paused", {"status": "paused", "paused_by": "carol"}),
                           ("awaiting", {"approvals": [{"by": "carol", "at": "", "comment": ""}], "approvals_needed": 2})):
            # (not new_id(old_ms): it never goes back in time within a process that made a newer id)
            w[key] = encode((old_ms << 80) | int.from_bytes(os.urandom(10), "big"))
            old_ms += 1
            await kv.put(w[key], json.dumps({"id": w[key], "name": "SleepDemo", "desc": "", "verdict": "approved",
                                             "status": "not_started", "submitted_by": "carol", "blocks": [],
                                             **extra}).encode())
        reply = await client.submit(alice, sleep_workreq(1))
        w["completed"] = reply["id"]
        await client.execute(alice, reply["id"])
        completed = await wait_terminal(alice, reply["id"])
        assert completed["status"] == "completed"
        who_alice = completed["submitted_by"]

        # a real failure: a malformed token bucket ends the satellite erase at its first job
        buckets = await admin.jetstream().key_value("wf_buckets")
        await buckets.put("diskEraseSatellite", b'{"tokens": "lots"')
        try:
            reply = await client.submit(bob, json.dumps(erase_satellite_workreq(load_inventory(REPO / "data"), "adg")).encode())
            w["failed"] = reply["id"]
            await client.execute(bob, reply["id"])
            failed = await wait_terminal(bob, reply["id"])
        finally:
            await buckets.delete("diskEraseSatellite")
        assert failed["status"] == "failed"
        who_bob = failed["submitted_by"]
        assert who_alice and who_bob and who_alice != who_bob

        with pytest.raises(WfError) as err:  # SleepDemo's policy allows sleep jobs only
            await client.submit(alice, json.dumps({"name": "SleepDemo", "blocks": [{"jobs": [
                {"name": "tokenBucket", "args": {"bucket": "diskEraseSatellite"}}]}]}).encode())
        assert err.value.body["verdict"] == "rejected"
        w["rejected"] = err.value.body["id"]
        w["not_executed"] = (await client.submit(alice, sleep_workreq(1)))["id"]

        # long sleeps (86,400 s at time scale 0.01: 864 s): one cancelled by bob, one left stuck, one retrying
        for key, person in (("cancelled", bob), ("stuck", bob), ("retrying", alice)):
            w[key] = (await client.submit(person, sleep_workreq(86_400)))["id"]
            await client.execute(person, w[key])
            await started(person, w[key])
        await client.cancel(bob, w["cancelled"])
        assert (await wait_terminal(bob, w["cancelled"]))["cancelled_by"] == who_bob

        # what a runner publishes when an attempt fails and another follows
        stuck_since = time.time()
        await asyncio.sleep(STUCK_S + 0.5)
        ev = JobFailed(id=w["retrying"], at=time.time(), block=0, job=0, attempt=1, error="connection refused",
                       retrying=True)
        await admin.jetstream().publish(event_subject(ev), encoder.encode(ev))

        async def retrying():  # type: ignore[no-untyped-def]
            job = (await client.status(alice, w["retrying"]))["blocks"][0]["jobs"][0]
            return job["status"] == "running" and job["error"].startswith("attempt 1 failed, retrying")
        await eventually(retrying, what="the retrying attempt folded")

        # --stuck first, while the retrying one's event is fresh and the stuck one's is not
        assert time.time() - stuck_since > STUCK_S
        assert ids(system, "--stuck", f"{STUCK_S}s") == [w["stuck"]]
        assert set(ids(system, "--stuck", "1h")) == set()
        assert ids(system, "--retrying") == [w["retrying"]]

        everyone = wf_ls(system)
        assert [s["id"] for s in everyone] == sorted(w.values(), reverse=True)  # newest first, all of them
        assert ids(system, "--status", "completed") == [w["completed"]]
        assert ids(system, "--status", "failed") == sorted([w["failed"], w["cancelled"]], reverse=True)
        assert ids(system, "--status", "running") == sorted([w["stuck"], w["retrying"]], reverse=True)
        assert ids(system, "--status", "rejected") == [w["rejected"]]
        assert ids(system, "--status", "cancelled") == [w["cancelled"]]
        assert ids(system, "--status", "failed,rejected") == sorted([w["failed"], w["cancelled"], w["rejected"]],
                                                                    reverse=True)
        assert ids(system, "--name", "SatelliteDiskErase") == [w["failed"]]
        assert ids(system, "--name", "Satellite*", "--name", "Other") == [w["failed"]]
        assert ids(system, "--by", who_bob) == sorted([w["failed"], w["cancelled"], w["stuck"]], reverse=True)
        assert ids(system, "--by", "carol") == sorted([w["paused"], w["awaiting"]], reverse=True)
        assert ids(system, "--by", "nobody") == []
        assert ids(system, "--by", who_bob, "--status", "running") == [w["stuck"]]
        assert ids(system, "--paused") == [w["paused"]]
        assert ids(system, "--awaiting-approval") == [w["awaiting"]]  # not_executed needs no approval
        assert set(ids(system, "--since", "1h")) == set(w.values()) - {w["paused"], w["awaiting"]}
        since = dt.datetime.fromtimestamp(id_time_s(w["failed"]), dt.UTC).isoformat()
        assert w["completed"] not in ids(system, "--since", since) and w["failed"] in ids(system, "--since", since)
        assert ids(system, "--since", "1h", "--name", "SleepDemo", "--status", "running", "--by", who_alice) == [
            w["retrying"]]
        assert ids(system, "--since", "1h", "--limit", "2") == sorted(w.values(), reverse=True)[:2]
        assert ids(system, "--status", "failed", "--limit", "1") == [max(w["failed"], w["cancelled"])]
        # the values are the StatusResps themselves
        assert next(s for s in everyone if s["id"] == w["cancelled"])["cancelled_by"] == who_bob

        # the table, and a wrong flag said in one line
        env = {**os.environ, "WF_NATS_URL": system.client_url}
        table = subprocess.run([sys.executable, "-m", "wf.cli", "ls", "--status", "running"], capture_output=True,
                               text=True, timeout=60, env=env, cwd=REPO)
        assert table.returncode == 0 and w["stuck"] in table.stdout and w["completed"] not in table.stdout
        bad = subprocess.run([sys.executable, "-m", "wf.cli", "ls", "--stuck", "soon"], capture_output=True,
                             text=True, timeout=60, env=env, cwd=REPO)
        assert bad.returncode != 0 and bad.stderr.startswith("wf: --stuck") and len(bad.stderr.splitlines()) == 1
    finally:
        for key in ("stuck", "retrying"):
            if key in w:
                await client.cancel(admin, w[key])
        for conn in (admin, alice, bob):
            await conn.close()
