"""A service that is alive but no longer works (its process stopped, its connection or loop wedged)
is noticed by `wf up` and replaced within seconds, not only one whose process died."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import nats
import pytest

from tests.conftest import REPO, eventually, processes, start_system, wait_terminal
from wf import client

pytestmark = pytest.mark.integration
SLEEP = (REPO / "examples" / "sleep.json").read_bytes()


async def test_a_wedged_intake_is_killed_and_replaced(tmp_path: Path) -> None:
    system = start_system(tmp_path, "--time-scale", "0.01", env={"WF_WEDGED_AFTER_S": "3"})
    nc = await nats.connect(system.client_url)
    try:
        [wedged] = processes(system.proc.pid)["intake"]
        os.kill(wedged, signal.SIGSTOP)  # alive, connected, answering nothing: a wedged loop looks the same

        async def replaced():  # type: ignore[no-untyped-def]
            pids = processes(system.proc.pid).get("intake", [])
            return pids and wedged not in pids

        await eventually(replaced, 30, what="wf up to replace the wedged intake")
        assert "process_wedged" in system.log_path.read_text(errors="replace")

        async def submits():  # type: ignore[no-untyped-def]
            try:
                return await client.submit(nc, SLEEP)
            except client.Unreachable:
                return None

        reply = await eventually(submits, 30, what="the new intake to take a submit")
        await client.execute(nc, reply["id"])
        assert (await wait_terminal(nc, reply["id"]))["status"] == "completed"
    finally:
        await nc.close()
        assert system.stop() == 0, system.log_tail()
