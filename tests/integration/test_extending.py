"""A user's own package adds a job and a policy through entry points, without forking."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nats
import pytest

from tests.conftest import REPO, eventually, start_system
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
        fh.write('{"Name": "Countdown", "Policies": [{"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["countdown"]}},'
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

        async def ended():
            status = await client.status(nc, reply["id"])
            return status if status["status"] in ("completed", "failed") else None

        status = await eventually(ended, what="the plugin's workflow to end")
        jobs = status["blocks"][0]["jobs"]
        assert [j["status"] for j in jobs] == ["completed", "failed"]
        assert jobs[1]["error"] == "countdown reached 1"

        with pytest.raises(WfError) as err:
            await client.submit(nc, workreq(*[{"name": "countdown", "args": {"from": "1"}}] * 4))
        assert err.value.message == "policy(maxJobs) violation: 4 jobs, more than Max 3"
        with pytest.raises(WfError) as err:
            await client.submit(nc, workreq({"name": "countdown", "args": {"from": "11"}}))
        assert err.value.message.startswith("invalid job: block 0 job 0 (countdown) argument 'from'")
    finally:
        await nc.close()
        assert system.stop() == 0
