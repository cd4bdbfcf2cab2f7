"""`wf.api.logs` and `wf logs` through a real system: what a job printed, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nats
import pytest

from tests.conftest import REPO, wait_terminal
from wf import client
from wf.client import WfError

pytestmark = pytest.mark.integration


@pytest.fixture
async def cnc(system):
    conn = await nats.connect(system.client_url)
    yield conn
    await conn.close()


def wf(system, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wf.cli", *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=60, env={**os.environ, "WF_NATS_URL": system.client_url})


async def sleep_workflow(cnc) -> str:
    req = {"name": "SleepDemo", "blocks": [{"jobs": [{"name": "sleep", "args": {"seconds": "1"}}]}]}
    wf_id = (await client.submit(cnc, json.dumps(req).encode()))["id"]
    await client.execute(cnc, wf_id)
    await wait_terminal(cnc, wf_id)
    return wf_id


async def test_a_job_that_printed_nothing_has_empty_logs(system, cnc):
    wf_id = await sleep_workflow(cnc)
    reply = await client.logs(cnc, wf_id, 0, 0)
    assert reply == {"id": wf_id, "block": 0, "job": 0, "name": "sleep", "status": "completed", "output": "",
                     "kept": False}
    status = await client.status(cnc, wf_id)
    assert status["blocks"][0]["jobs"][0]["output"] == ""


async def test_unknown_workflow_block_or_job_is_404_and_a_bad_body_400(system, cnc):
    wf_id = await sleep_workflow(cnc)
    for args, words in (((wf_id, 1, 0), "has no block 1"), ((wf_id, 0, 1), "has no job 1"),
                        ((wf_id, 0, -1), "has no job -1"), (("01JZZZZZZZZZZZZZZZZZZZZZZZ", 0, 0), "unknown id")):
        with pytest.raises(WfError) as err:
            await client.logs(cnc, *args)
        assert err.value.code == 404 and words in err.value.message, (args, err.value.message)
    for body in (b"not json", b'{"id": "x"}', b'{"id": "x", "block": "0", "job": 0}',
                 b'{"id": "x", "block": 0, "job": 0, "extra": 1}', b'{"id": "x", "id": "y", "block": 0, "job": 0}'):
        with pytest.raises(WfError) as err:
            await client.call(cnc, "wf.api.logs", body)
        assert err.value.code == 400, body


async def test_wf_logs_prints_the_output_or_one_line_of_error(system, cnc):
    wf_id = await sleep_workflow(cnc)
    done = wf(system, "logs", wf_id, "0", "0")
    assert done.returncode == 0 and done.stdout == "", done.stderr
    assert f"# {wf_id} block 0 job 0 (sleep): completed" in done.stderr
    done = wf(system, "logs", wf_id, "3", "0")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("wf: error 404:") and "has no block 3" in done.stderr and "Traceback" not in done.stderr
    done = wf(system, "logs", wf_id, "0", "-1")
    assert done.returncode != 0 and "Traceback" not in done.stderr
