"""The examples of real work (examples/real_work.py) run end to end, against a real sshd and a real
HTTP server on loopback: a rolling restart in batches, each gated by a health check, and a host
drained, maintained and undrained at a load balancer's API with a token the runner keeps secret.

The WorkReqs are made by the example script itself, as its docstring shows (only the hosts, ports
and commands are the test's); the policies are examples/policies.json's, with loopback hosts and URLs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from services.inventory import InventorySource
from services.jobs import JobEnv, load_jobs
from services.policy.registry import load_policies, parse_policy_config
from tests.conftest import REPO, configs_with, start_system, wait_terminal
from tests.httpserver import HttpTestServer
from tests.sshd import Sshd, sshd_or_skip
from wf import client

pytestmark = pytest.mark.integration
LB_TOKEN = "lb-token-0123456789abcdef"
EXAMPLES = REPO / "examples"


def example(*args: str) -> bytes:
    """The WorkReq the example script prints, run as a user would run it."""
    return subprocess.run([sys.executable, str(EXAMPLES / "real_work.py"), *args], check=True,
                          capture_output=True, cwd=REPO, timeout=30).stdout


def loopback_policies(http: HttpTestServer) -> list[dict]:
    """examples/policies.json with this test's hosts and URLs (and no approval for DrainHost)."""
    entries = _json_stream((EXAMPLES / "policies.json").read_text())
    for entry in entries:
        policies = []
        for policy in entry["Policies"]:
            if policy["Name"] == "allowHosts":
                policy = {"Name": "allowHosts", "Settings": {"Hosts": ["127.0.0.1"]}}
            elif policy["Name"] == "allowUrls":
                policy = {"Name": "allowUrls", "Settings": {**policy["Settings"],
                                                            "Prefixes": [http.url("/health"), http.url("/lb/")]}}
            elif policy["Name"] == "requireApproval":
                continue
            policies.append(policy)
        entry["Policies"] = policies
    return entries


def _json_stream(text: str) -> list[dict]:
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        value, i = decoder.raw_decode(text, i)
        out.append(value)
    return out


def test_the_example_policies_are_valid():
    source = InventorySource(REPO / "data")
    jobs = load_jobs(JobEnv(inventory=source, buckets={}))
    config = parse_policy_config((EXAMPLES / "policies.json").read_text(), load_policies(source), jobs)
    assert set(config.by_name) == {"RollingRestart", "DrainHost"}


@pytest.fixture(scope="module")
def http() -> Iterator[HttpTestServer]:
    with HttpTestServer() as server:
        yield server


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[Sshd]:
    server = sshd_or_skip(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def examples_system(tmp_path_factory, http, sshd):
    tmp = tmp_path_factory.mktemp("examples")
    config_dir = configs_with(tmp, {entry["Name"]: entry["Policies"] for entry in loopback_policies(http)})
    system = start_system(tmp, "--time-scale", "1", "--runners", "1", config_dir=config_dir,
                          env={**sshd.env(), "WF_SECRET_LB_TOKEN": LB_TOKEN})
    yield system
    assert system.stop() == 0, system.log_tail()


@pytest.fixture
async def nc(examples_system):
    conn = await nats.connect(examples_system.client_url)
    yield conn
    await conn.close()


async def run(nc, workreq: bytes) -> dict:
    reply = await client.submit(nc, workreq)
    assert reply["verdict"] == "approved", reply
    await client.execute(nc, reply["id"])
    return await wait_terminal(nc, reply["id"], timeout_s=90)


def restart_command(log: Path) -> str:
    # what "restarting" leaves behind: one line per host, with the time, for the order of events
    return f"echo restarted $(date +%s.%N) >> {log}"


async def test_rolling_restart_in_batches_each_gated_by_a_health_check(nc, http, sshd, tmp_path):
    log = tmp_path / "restarts.log"
    http.reset()
    status = await run(nc, example("rolling-restart", "--hosts", ",".join(["127.0.0.1"] * 4), "--batch", "2",
                                   "--user", sshd.user, "--port", str(sshd.port), "--command", restart_command(log),
                                   "--health-url", http.url("/health"), "--checks", "2"))
    assert status["status"] == "completed", status
    assert [b["desc"].split(":")[0] for b in status["blocks"]] == [
        "restart batch 1 of 2", "health check after batch 1", "restart batch 2 of 2", "health check after batch 2"]
    assert len(log.read_text().splitlines()) == 4
    assert http.count("/health") == 2


async def test_a_failing_health_check_stops_the_rollout_before_the_next_batch(nc, http, sshd, tmp_path):
    log = tmp_path / "restarts.log"
    http.reset()
    http.set_health({"status": "degraded"})
    status = await run(nc, example("rolling-restart", "--hosts", ",".join(["127.0.0.1"] * 4), "--batch", "2",
                                   "--user", sshd.user, "--port", str(sshd.port), "--command", restart_command(log),
                                   "--health-url", http.url("/health"), "--checks", "2"))
    assert status["status"] == "failed", status
    check = status["blocks"][1]["jobs"][0]
    assert check["status"] == "failed" and "status" in check["error"] and "degraded" in check["error"], check
    assert len(log.read_text().splitlines()) == 2, "the second batch must never be restarted"
    assert status["blocks"][2]["jobs"][0]["status"] == "not_started"
    assert http.count("/health") == 2  # two attempts, then the gate failed for good


async def test_drain_maintenance_undrain_with_a_secret_token(nc, http, sshd, tmp_path):
    marker = tmp_path / "maintained"
    http.reset()
    http.route("/lb/drain", 200, {"draining": True})
    http.route("/lb/undrain", 200, {"draining": False})
    http.route("/lb/hosts/127.0.0.1", 200, {"active": 0, "state": "active"})
    workreq = example("drain-host", "--host", "127.0.0.1", "--lb-url", http.url("/lb"), "--user", sshd.user,
                      "--port", str(sshd.port), "--command", f"touch {marker}", "--token-secret", "LB_TOKEN")
    assert LB_TOKEN.encode() not in workreq and b"secret:LB_TOKEN" in workreq
    status = await run(nc, workreq)
    assert status["status"] == "completed", status
    assert marker.exists()
    order = [(r.method, r.path) for r in http.requests]
    assert order == [("POST", "/lb/drain"), ("GET", "/lb/hosts/127.0.0.1"), ("POST", "/lb/undrain"),
                     ("GET", "/lb/hosts/127.0.0.1")]
    assert all(r.headers.get("Authorization") == LB_TOKEN for r in http.requests)
    assert json.loads(http.requests[0].body) == {"host": "127.0.0.1"}
    assert LB_TOKEN not in json.dumps(status)
