"""A user's own package adds a job and a policy through entry points, without forking."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nats
import pytest

from schemas import JobFailed, JobStarted, event_decoder
from services.common.bus import read_history
from tests.conftest import REPO, start_system, wait_terminal
from wf import client
from wf.client import WfError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """The example plugin installed (as a user would, with pip) into a directory of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(REPO / "tests" / "example_plugin")],
        check=True, capture_output=True, timeout=300,
    )
    return target


def workreq(*jobs):
    return json.dumps({"name": "Countdown", "blocks": [{"rate_limit": 2, "jobs": list(jobs)}]}).encode()


async def test_a_plugin_job_and_policy_run_through_the_bus(tmp_path, plugin_site):
    config_dir = tmp_path / "configs"
    shutil.copytree(REPO / "configs", config_dir)
    with open(config_dir / "policies.json", "a") as fh:
        fh.write('{"Name": "Countdown", "Policies": [{"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["countdown", "flaky"]}},'
                 ' {"Name": "maxJobs", "Settings": {"Max": 3}}]}\n')
    with open(config_dir / "es.json", "a") as fh:
        fh.write('{"Name": "Countdown", "Status": "go"}\n')
    system = start_system(tmp_path, "--time-scale", "0.01", config_dir=config_dir, env={"PYTHONPATH": f"{plugin_site}:{REPO}"})
    nc = await nats.connect(system.url)
    try:
        reply = await client.submit(nc, workreq({"name": "countdown", "args": {"from": "3"}},
                                                {"name": "countdown", "args": {"from": "2", "failAt": "1"}}))
        assert reply["verdict"] == "approved"
        await client.execute(nc, reply["id"])

        status = await wait_terminal(nc, reply["id"])
        jobs = status["blocks"][0]["jobs"]
        assert [j["status"] for j in jobs] == ["completed", "failed"]
        assert jobs[1]["error"] == "countdown reached 1"

        # retries: attempt 2 succeeds; succeedAt 5 is past max_attempts 3
        reply = await client.submit(nc, workreq({"name": "flaky", "args": {"succeedAt": "2"}},
                                                {"name": "flaky", "args": {"succeedAt": "5"}}))
        await client.execute(nc, reply["id"])
        jobs = (await wait_terminal(nc, reply["id"]))["blocks"][0]["jobs"]
        assert [j["status"] for j in jobs] == ["completed", "failed"]
        assert jobs[0]["error"] == "" and jobs[1]["error"] == "not yet (attempt 3)"
        events = [event_decoder.decode(m.data) for m in await read_history(nc.jetstream(), reply["id"])]
        assert sorted(e.attempt for e in events if isinstance(e, JobStarted) and e.job == 0) == [1, 2]
        assert sorted(e.attempt for e in events if isinstance(e, JobStarted) and e.job == 1) == [1, 2, 3]
        assert sorted((e.attempt, e.retrying) for e in events if isinstance(e, JobFailed) and e.job == 1) == [
            (1, True), (2, True), (3, False)]

        # a failure budget of 1: the second failure ends the workflow, the rest never starts
        failing = {"name": "countdown", "args": {"from": "1", "failAt": "1"}}
        body = json.loads(workreq(failing, failing, failing))
        body["blocks"][0]["rate_limit"] = 1
        reply = await client.submit(nc, json.dumps({**body, "max_failures": 1}).encode())
        await client.execute(nc, reply["id"])
        status = await wait_terminal(nc, reply["id"])
        assert [j["status"] for j in status["blocks"][0]["jobs"]] == ["failed", "failed", "not_started"]
        assert status["status"] == "failed" and status["had_errors"]

        with pytest.raises(WfError) as err:
            await client.submit(nc, workreq(*[{"name": "countdown", "args": {"from": "1"}}] * 4))
        assert err.value.message == "policy(maxJobs) violation: 4 jobs, more than Max 3"
        with pytest.raises(WfError) as err:
            await client.submit(nc, workreq({"name": "countdown", "args": {"from": "11"}}))
        assert err.value.message.startswith("invalid job: block 0 job 0 (countdown) argument 'from'")
    finally:
        await nc.close()
        assert system.stop() == 0
