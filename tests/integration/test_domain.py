"""The seed's domain through the bus: satellite erases, the token bucket, policies, live policy reload."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import nats
import pytest

from services.buckets import BucketConfig, BucketStore
from services.inventory import load_inventory
from tests.conftest import REPO, eventually, start_system, wait_terminal
from wf import client
from wf.client import WfError
from wf.erase import erase_satellite_workreq

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def domain_system(tmp_path_factory):
    """A system of its own (the diskEraseSatellite bucket's state must start full), with a config
    dir the tests may break and fix."""
    tmp = tmp_path_factory.mktemp("domain")
    config_dir = tmp / "configs"
    shutil.copytree(REPO / "configs", config_dir)
    system = start_system(tmp, "--time-scale", "0.002", "--runners", "2", config_dir=config_dir)
    system.config_dir = config_dir
    yield system
    assert system.stop() == 0, system.log_tail()


@pytest.fixture
async def dnc(domain_system):
    nc = await nats.connect(domain_system.url)
    yield nc
    await nc.close()


def erase_body(site):
    return json.dumps(erase_satellite_workreq(load_inventory(REPO / "data"), site)).encode()


async def run_to_end(nc, body, timeout_s=60):
    reply = await client.submit(nc, body)
    assert reply["verdict"] == "approved"
    await client.execute(nc, reply["id"])
    return await wait_terminal(nc, reply["id"], timeout_s)


async def test_an_erase_completes_and_a_second_within_the_interval_fails_at_its_token(dnc):
    first = await run_to_end(dnc, erase_body("aap"))
    assert first["status"] == "completed" and not first["had_errors"]
    assert len(first["blocks"]) == 11
    assert all(j["status"] == "completed" for b in first["blocks"] for j in b["jobs"])

    second = await run_to_end(dnc, erase_body("adg"))
    assert second["status"] == "failed" and second["had_errors"]
    check = second["blocks"][0]
    assert check["status"] == "failed" and check["has_error"]
    assert [j["status"] for j in check["jobs"]] == ["completed", "failed"]
    assert "no token in bucket 'diskEraseSatellite'" in check["jobs"][1]["error"]
    assert all(b["status"] == "not_started" for b in second["blocks"][1:]), "no later block may start"
    assert all(j["status"] == "not_started" for b in second["blocks"][1:] for j in b["jobs"])


async def test_mixed_sites_are_rejected_by_same_args(dnc):
    body = json.loads(erase_body("aap"))
    body["blocks"][2]["jobs"][0]["args"] = {"machine": "aa00", "site": "adg"}
    with pytest.raises(WfError) as err:
        await client.submit(dnc, json.dumps(body).encode())
    assert err.value.code == 400 and err.value.body["verdict"] == "rejected"
    assert err.value.message.startswith("policy(sameArgs) violation: job 'diskErase' argument 'site' differs")


async def test_a_sleep_before_the_token_is_rejected_by_start_or_end(dnc):
    body = json.loads(erase_body("aap"))
    body["blocks"][0]["jobs"].insert(0, {"name": "sleep", "args": {"seconds": "1"}})
    with pytest.raises(WfError) as err:
        await client.submit(dnc, json.dumps(body).encode())
    assert err.value.code == 400
    assert err.value.message == "policy(startOrEnd) violation: the first job of the first block must be 'tokenBucket', found 'sleep'"


async def test_an_erase_of_an_in_service_site_is_rejected_naming_the_argument(dnc):
    body = json.loads(erase_body("aap"))
    body["blocks"][0]["jobs"][0]["args"]["site"] = "aaa"
    with pytest.raises(WfError) as err:
        await client.submit(dnc, json.dumps(body).encode())
    assert err.value.message == "invalid job: block 0 job 0 (validateDecom) argument 'site': site 'aaa' is inService, not decom"


async def test_a_broken_policies_json_gives_503_and_fixing_it_recovers_without_a_restart(dnc, domain_system):
    path = domain_system.config_dir / "policies.json"
    good = path.read_text()
    sleep_body = (REPO / "examples" / "sleep.json").read_bytes()
    try:
        path.write_text(good + '\n{"Name": "Broken", "Policies": [{"Name": "noSuchPolicy"}]}\n')

        async def refused():
            try:
                await client.submit(dnc, sleep_body)
            except WfError as err:
                return err if err.code == 503 else None
            return None

        err = await eventually(refused, what="submissions to be refused with 503")
        assert "unknown policy 'noSuchPolicy'" in err.message
    finally:
        path.write_text(good)

    async def accepted():
        try:
            return (await client.submit(dnc, sleep_body))["verdict"] == "approved"
        except WfError:
            return False

    await eventually(accepted, what="submissions to be accepted again")


async def test_a_name_with_an_empty_policy_list_fails_closed_with_503_for_every_name(dnc, domain_system):
    """It once approved every WorkReq of that name; now the whole file is a configuration error."""
    path = domain_system.config_dir / "policies.json"
    good = path.read_text()
    sleep_body = (REPO / "examples" / "sleep.json").read_bytes()
    open_body = json.dumps({"name": "Open", "blocks": [{"jobs": [{"name": "sleep", "args": {"seconds": "1"}}]}]}).encode()
    try:
        path.write_text(good + '\n{"Name": "Open", "Policies": []}\n')

        async def refused(body):
            try:
                await client.submit(dnc, body, attempts=1)
            except WfError as err:
                return err if err.code == 503 else None
            return None

        err = await eventually(lambda: refused(sleep_body), what="submissions to be refused with 503")
        assert "entry 3 (Open): Policies is empty" in err.message
        assert (await refused(open_body)) is not None, "the empty entry's own name is refused too"
    finally:
        path.write_text(good)

    async def accepted():
        try:
            return (await client.submit(dnc, sleep_body, attempts=1))["verdict"] == "approved"
        except WfError:
            return False

    await eventually(accepted, what="submissions to be accepted again")


async def test_two_takers_racing_for_one_token_get_exactly_one(domain_system):
    """Each taker on its own connection, as separate processes would be."""
    conns = [await nats.connect(domain_system.url) for _ in range(8)]
    try:
        config = BucketConfig(size=1, refill=1, every="1h")
        stores = [BucketStore(await nc.jetstream().key_value("wf_buckets")) for nc in conns]
        results = await asyncio.gather(*(store.take("raceTest", config) for store in stores))
        assert sorted(r == 0.0 for r in results) == [False] * 7 + [True]
        assert all(0 < r <= 3600 for r in results if r)
    finally:
        for nc in conns:
            await nc.close()


def test_the_erase_satellite_command_and_its_submit_log(domain_system, tmp_path):
    env = {**os.environ, "WF_NATS_URL": domain_system.url}
    wf = [sys.executable, "-m", "wf.cli", "--data-dir", str(tmp_path)]
    refused = subprocess.run([*wf, "erase-satellite", "aab"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert refused.returncode == 1 and "site 'aab' is a cluster, not a satellite" in refused.stderr
    ran = subprocess.run([*wf, "erase-satellite", "adv", "--watch"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert "submitted" in ran.stdout and "executing" in ran.stdout, ran.stderr
    wf_id = ran.stdout.split()[1].rstrip(":")
    log_line = (tmp_path / "submit.log").read_text().strip()
    assert log_line.endswith(f"{wf_id} erase-satellite adv")
    final = json.loads(subprocess.run([*wf, "status", wf_id, "--json"], capture_output=True, text=True, env=env,
                                      timeout=60, check=True).stdout)
    assert final["status"] in ("completed", "failed")
    assert ran.returncode == (0 if final["status"] == "completed" else 1)
    assert f"status={final['status']}" in ran.stdout
