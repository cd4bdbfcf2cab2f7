"""Foreign clients work as the contract promises: the official JavaScript client (nats.js v3,
`@nats-io/transport-node` and `@nats-io/jetstream`) with a client credential.

`tests/js/ordered.mjs` is the JavaScript example of docs/clients.md, byte for byte (checked here):
it connects as the doc says (user and password as options: nats.js takes none from a URL),
submits a WorkReq, makes nats.js's ordered consumer (`js.consumers.get(stream, {filter_subjects})`,
which pulls with `$JS.API.CONSUMER.MSG.NEXT` on a consumer of its own) on the people's view
`WF_EVENTS` before the exec, executes, and prints every event of the workflow until it ends. Its
consumer must live on PEOPLE's view, and the services' durable consumers must not change (the hole
closed by the two accounts: docs/security.md)."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import nats
import pytest

from tests.conftest import REPO, wait_terminal
from tests.integration.test_gate_attacks import durable_configs

pytestmark = pytest.mark.integration
JS_DIR = REPO / "tests" / "js"
SCRIPT = JS_DIR / "ordered.mjs"
NPM_CI_S = 300
NODE_S = 60
LOCKED = ("package.json", "package-lock.json")

def sleep(desc: str, seconds: int) -> dict:  # type: ignore[type-arg]
    return {"name": "sleep", "desc": desc, "args": {"seconds": str(seconds)}}


# Two blocks, the first with two jobs at once (1 s sleeps are 10 ms at the fixture's time scale)
WORKREQ = {"name": "SleepDemo", "desc": "followed by nats.js", "blocks": [
    {"desc": "two at once", "rate_limit": 2, "jobs": [sleep("a", 1), sleep("b", 2)]},
    {"desc": "then one", "rate_limit": 1, "jobs": [sleep("c", 1)]},
]}


@pytest.fixture(scope="session")
def node() -> str:
    """`node`, with tests/js/node_modules installed by `npm ci` from package-lock.json (again only
    when the lock or package.json changed since the last install)."""
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    if node_bin is None or npm_bin is None:
        pytest.skip("the JavaScript client test needs `node` and `npm` on PATH (Node 20 or later)")
    wanted = hashlib.sha256(b"".join((JS_DIR / name).read_bytes() for name in LOCKED))
    stamp = JS_DIR / "node_modules" / ".wf-installed"
    lock_path = Path(tempfile.gettempdir()) / f"wf-npm-ci-{os.getuid()}.lock"
    with open(lock_path, "w") as lock:  # two test runs at once must not install over each other
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == wanted.hexdigest()):
            try:
                done = subprocess.run([npm_bin, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR,
                                      capture_output=True, text=True, timeout=NPM_CI_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"npm ci in {JS_DIR} took over {NPM_CI_S} s")
            if done.returncode != 0:
                pytest.fail(f"npm ci in {JS_DIR} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
            stamp.write_text(wanted.hexdigest())
    return node_bin


def test_the_docs_javascript_example_is_the_script_this_test_runs():
    text = (REPO / "docs" / "clients.md").read_text()
    section = text.split("\n## JavaScript", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```js\n(.*?)```", section, re.S)
    assert block is not None, "docs/clients.md has no ```js block in its JavaScript section"
    assert block.group(1) == SCRIPT.read_text(), "docs/clients.md's JavaScript is not tests/js/ordered.mjs"


async def run_node(node: str, url: str, workreq: Path) -> list[dict]:  # type: ignore[type-arg]
    env = {**{name: value for name, value in os.environ.items() if name != "WF_NATS_CA"}, "WF_NATS_URL": url}
    proc = await asyncio.create_subprocess_exec(node, str(SCRIPT), str(workreq), cwd=JS_DIR, env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), NODE_S)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(f"node {SCRIPT.name} did not end within {NODE_S} s:\n{out.decode()}\n{err.decode()}")
    assert proc.returncode == 0, f"node {SCRIPT.name} exited {proc.returncode}:\n{out.decode()}{err.decode()}"
    return [json.loads(line) for line in out.decode().splitlines()]


async def wf_subjects(admin, wf_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The workflow's events in WF's own WF_EVENTS (the source of truth), in stream order."""
    js = admin.jetstream()
    sub = await js.subscribe(f"wf.evt.{wf_id}.>", stream="WF_EVENTS", ordered_consumer=True)
    subjects: list[str] = []
    try:
        while not subjects or not re.search(r"\.workflow\.(completed|failed)$", subjects[-1]):
            subjects.append((await sub.next_msg(timeout=5)).subject)
    finally:
        await sub.unsubscribe()
    return subjects


async def test_nats_js_ordered_consumer_reads_every_event_of_a_workflow_on_the_view(system, node, tmp_path):
    workreq = tmp_path / "workreq.json"
    workreq.write_text(json.dumps(WORKREQ))
    admin = await nats.connect(system.url)
    person = await nats.connect(system.client_url)
    try:
        before = await durable_configs(admin)
        lines = await run_node(node, system.client_url, workreq)
        assert lines[0]["verdict"] == "approved", lines[0]
        wf_id, consumer = lines[0]["id"], lines[1]["consumer"]
        events = lines[2:]
        seen = [event["subject"] for event in events]
        evt = f"wf.evt.{wf_id}."

        # every event, each once, in stream order: the same order as WF's own stream
        assert seen == await wf_subjects(admin, wf_id)
        assert [e["seq"] for e in events] == sorted({e["seq"] for e in events}), "not in the view's order"
        assert seen[:4] == [evt + s for s in ("submitted", "approved", "exec_requested", "workflow.started")]
        assert seen[-1] == evt + "workflow.completed"
        jobs = {(0, 0), (0, 1), (1, 0)}
        assert sorted(seen[4:-1]) == sorted(
            [evt + f"block.{b}.{end}" for b in (0, 1) for end in ("started", "completed")]
            + [evt + f"job.{b}.{j}.{end}" for b, j in jobs for end in ("started", "completed")])
        at = {subject.removeprefix(evt): index for index, subject in enumerate(seen)}
        for b, j in jobs:
            assert at[f"block.{b}.started"] < at[f"job.{b}.{j}.started"] < at[f"job.{b}.{j}.completed"] \
                < at[f"block.{b}.completed"]
        assert at["block.0.completed"] < at["block.1.started"]
        assert (await wait_terminal(person, wf_id))["status"] == "completed"

        # the person's consumer lived on PEOPLE's view, never in WF; the services' are untouched
        mine = await person.jetstream().consumer_info("WF_EVENTS", consumer)
        assert mine.stream_name == "WF_EVENTS"
        assert f"wf.evt.{wf_id}.>" in (mine.config.filter_subject, *(mine.config.filter_subjects or ()))
        assert 0 < (mine.config.inactive_threshold or 0) <= 300
        with pytest.raises(nats.js.errors.NotFoundError):
            await admin.jetstream().consumer_info("WF_EVENTS", consumer)
        assert consumer not in {c.name for c in await admin.jetstream().consumers_info("WF_EVENTS")}
        assert await durable_configs(admin) == before, "the JavaScript client changed a service's consumer"
    finally:
        await person.close()
        await admin.close()
    # and it needed nothing the client role lacks: the server refused none of its requests
    violations = [line for line in system.log_path.read_text(errors="replace").splitlines()
                  if "violation" in line.lower()]
    assert not violations, "\n".join(violations[:10])
