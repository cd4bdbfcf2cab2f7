"""The `http` job through the real system (`wf up`, real runners) against a real HTTP server
(tests/httpserver.py): a call that succeeds with its body as the job's output, a retry of a 503, a
failing health check that gates the next block, a URL the WorkReq name's `allowUrls` does not allow,
and a runner's secret sent in a header and echoed back that shows up in no event, no StatusResp, no
`wf logs` and no log line."""

from __future__ import annotations

import json

import nats
import nats.js.errors
import pytest

from schemas import JobFailed, JobStarted, event_decoder
from services.common.bus import read_history
from tests.conftest import configs_with, eventually, start_system, wait_terminal
from tests.httpserver import HttpTestServer
from wf import client
from wf.client import WfError

pytestmark = pytest.mark.integration
NAME = "HttpJobTest"
STOP_NAME = "HttpJobStopTest"
TOKEN = "tok-9f3a7c1e5b-very-secret"


@pytest.fixture(scope="module")
def http_server():
    with HttpTestServer() as server:
        yield server


@pytest.fixture(scope="module")
def http_system(tmp_path_factory, http_server):
    tmp = tmp_path_factory.mktemp("http")
    policies = [{"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["http", "sleep"]}},
                {"Name": "allowUrls", "Settings": {"Prefixes": [http_server.base_url + "/"], "Secrets": ["TOKEN"]}}]
    config_dir = configs_with(tmp, {NAME: policies, STOP_NAME: policies})
    system = start_system(tmp, "--time-scale", "0.01", "--runners", "2", config_dir=config_dir,
                          env={"WF_SECRET_TOKEN": TOKEN})
    yield system
    assert system.stop() == 0, system.log_tail()


@pytest.fixture
async def hnc(http_system):
    nc = await nats.connect(http_system.url)
    yield nc
    await nc.close()


def http(path_or_url: str, server: HttpTestServer, **args: str) -> dict:
    url = path_or_url if "://" in path_or_url else server.url(path_or_url)
    return {"name": "http", "args": {"method": "GET", "url": url, **args}}


def workreq(*blocks: list[dict], name: str = NAME) -> bytes:
    return json.dumps({"name": name, "blocks": [{"rate_limit": 1, "jobs": jobs} for jobs in blocks]}).encode()


async def start(nc, body: bytes) -> str:
    reply = await client.submit(nc, body)
    assert reply["verdict"] == "approved", reply
    await client.execute(nc, reply["id"])
    return reply["id"]


async def run(nc, body: bytes) -> tuple[str, dict]:
    wf_id = await start(nc, body)
    return wf_id, await wait_terminal(nc, wf_id, 60)


async def events(nc, wf_id: str) -> list:
    return [event_decoder.decode(m.data) for m in await read_history(nc.jetstream(), wf_id)]


async def test_a_call_succeeds_with_its_body_as_output(hnc, http_server):
    http_server.set_health({"status": "ok", "checks": {"db": "green"}}, name="ok")
    before = http_server.count("/health/ok")
    wf_id, status = await run(hnc, workreq([http("/health/ok", http_server, expect_json="checks.db=green")]))
    assert status["status"] == "completed" and not status["had_errors"], status
    job = status["blocks"][0]["jobs"][0]
    assert job["status"] == "completed"
    assert json.loads(job["output"]) == {"status": "ok", "checks": {"db": "green"}}
    assert http_server.count("/health/ok") == before + 1
    logs = await client.logs(hnc, wf_id, 0, 0)
    assert json.loads(logs["output"])["checks"] == {"db": "green"}


async def test_a_503_is_retried_with_the_runners_backoff(hnc, http_server):
    wf_id, status = await run(hnc, workreq([http("/flaky?fails=1&key=integration", http_server, attempts="2")]))
    assert status["status"] == "completed", status
    history = await events(hnc, wf_id)
    retried = [ev for ev in history if isinstance(ev, JobFailed)]
    assert len(retried) == 1 and retried[0].retrying and "503" in retried[0].error
    assert sum(isinstance(ev, JobStarted) for ev in history) == 2


async def test_a_failing_health_check_gates_the_next_block(hnc, http_server):
    """Block 0's health check (fatal) finds "down": the workflow fails, block 1 never starts."""
    http_server.set_health({"status": "down"}, name="gate")
    http_server.route("/next", 200, {"done": True})
    wf_id, status = await run(hnc, workreq(
        [http("/health/gate", http_server, expect_json="status=ok", fatal="true", attempts="1")],
        [http("/next", http_server)],
    ))
    assert status["status"] == "failed", status
    gate = status["blocks"][0]["jobs"][0]
    assert gate["status"] == "failed"
    assert "expect_json status: expected ok, got \"down\"" in gate["error"], gate["error"]
    assert json.loads(gate["output"]) == {"status": "down"}
    assert status["blocks"][1]["jobs"][0]["status"] == "not_started"
    assert not [ev for ev in await events(hnc, wf_id) if isinstance(ev, JobStarted) and ev.block == 1]
    assert http_server.count("/next") == 0

    # healthy again: the same WorkReq runs both blocks
    http_server.set_health({"status": "ok"}, name="gate")
    _, status = await run(hnc, workreq(
        [http("/health/gate", http_server, expect_json="status=ok", fatal="true", attempts="1")],
        [http("/next", http_server)],
    ))
    assert status["status"] == "completed", status
    assert http_server.count("/next") == 1


async def test_a_url_outside_the_allowed_prefixes_is_refused(hnc, http_server):
    for url in ("http://127.0.0.2:%d/health" % http_server.port, "https://deploy.example/api"):
        with pytest.raises(WfError) as refused:
            await client.submit(hnc, workreq([http(url, http_server)]))
        assert refused.value.code == 400 and refused.value.body["verdict"] == "rejected"
        assert "allowUrls" in refused.value.message and url in refused.value.message, refused.value.message
        assert "block 0 job 0 (http)" in refused.value.message


async def test_a_secret_sent_and_echoed_back_is_shown_nowhere(hnc, http_server, http_system):
    headers = json.dumps({"Authorization": "secret:TOKEN", "Content-Type": "text/plain"})
    before = len(http_server.requests)
    wf_id, status = await run(hnc, workreq([
        {"name": "http", "args": {"method": "POST", "url": http_server.url("/echo"), "headers": headers,
                                  "body": "secret:TOKEN"}},
        # a mismatch whose message would quote the secret (not fatal: the workflow goes on)
        {"name": "http", "args": {"method": "POST", "url": http_server.url("/echo"), "headers": headers,
                                  "expect_json": "headers.Authorization=nope", "attempts": "1"}},
    ]))
    assert status["status"] in ("completed", "failed") and status["had_errors"], status
    seen = [r for r in http_server.requests[before:] if r.path == "/echo"]
    assert len(seen) == 2 and all(r.headers["Authorization"] == TOKEN for r in seen), "the secret reached the server"
    assert seen[0].body == TOKEN.encode()

    ok, mismatch = status["blocks"][0]["jobs"]
    assert ok["status"] == "completed" and mismatch["status"] == "failed"
    echoed = json.loads(ok["output"])
    assert echoed["headers"]["Authorization"] == "[secret:TOKEN]" and echoed["body"] == "[secret:TOKEN]"
    assert "expected nope, got \"[secret:TOKEN]\"" in mismatch["error"], mismatch["error"]

    shown = json.dumps(status) + json.dumps(await client.logs(hnc, wf_id, 0, 0)) + json.dumps(
        await client.logs(hnc, wf_id, 0, 1))
    assert "[secret:TOKEN]" in shown and TOKEN not in shown

    js = hnc.jetstream()
    info = await js.stream_info("WF_EVENTS")
    read = 0
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg("WF_EVENTS", seq)
        except nats.js.errors.NotFoundError:
            continue
        read += 1
        assert TOKEN.encode() not in (msg.data or b""), f"the secret is in event {msg.subject}"
        assert TOKEN not in json.dumps(msg.headers or {}), f"the secret is in event {msg.subject}'s headers"
    assert read > 0
    assert TOKEN not in http_system.log_path.read_text(errors="replace"), "the secret is in the services' log"


@pytest.mark.parametrize("how", ["cancel", "emergency stop"])
async def test_a_cancel_or_emergency_stop_abandons_the_call_and_closes_its_connection(hnc, http_server, how):
    """A call to /slow (30 s) is cut at once: the server sees its client go away within a second or
    two, the job fails with the stop's reason, and nothing else of the workflow runs."""
    name = NAME if how == "cancel" else STOP_NAME
    before, gone = http_server.count("/slow"), http_server.disconnects("/slow")
    wf_id = await start(hnc, workreq([http("/slow?s=30", http_server, timeout="60", attempts="1")],
                                     [http("/next-after-stop", http_server)], name=name))

    async def reached() -> bool:
        return http_server.count("/slow") > before

    await eventually(reached, 20, what="the call to reach the server")
    kv = await hnc.jetstream().key_value("wf_es")
    try:
        if how == "cancel":
            await client.cancel(hnc, wf_id)
        else:
            await kv.put(STOP_NAME, b"stop")

        async def closed() -> bool:
            return http_server.disconnects("/slow") > gone

        await eventually(closed, 5, what="the runner to close the connection")
        status = await wait_terminal(hnc, wf_id, 20)
    finally:
        await kv.put(STOP_NAME, b"go")
    job = status["blocks"][0]["jobs"][0]
    assert status["status"] == "failed" and job["status"] == "failed", status
    assert ("cancel" in job["error"]) if how == "cancel" else ("emergency stop" in job["error"]), job["error"]
    assert http_server.count("/next-after-stop") == 0
    assert http_server.count("/slow") == before + 1, "the call was not tried again"
