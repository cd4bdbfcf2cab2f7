"""Fixtures that run the real system: `wf up` in a subprocess, on a free loopback port, store in a temp dir."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import nats
import pytest

from services.common.topology import SERVICE_ROLES
from tests.procs import descendants
from wf import launch
from wf.up import free_port

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@dataclass
class RunningSystem:
    proc: subprocess.Popen  # type: ignore[type-arg]
    data_dir: Path
    log_path: Path
    url: str  # the admin role's: tests inspect and arrange freely
    client_url: str = ""
    operator_url: str = ""

    def read_urls(self) -> None:
        def url(role: str) -> str:
            return launch.env_url(self.data_dir, role)

        self.url, self.client_url, self.operator_url = url("admin"), url("client"), url("operator")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30) -> int:
        return launch.stop(self.proc, timeout_s)


def start_system(
    tmp: Path, *args: str, config_dir: Path = REPO / "configs", env: dict[str, str] | None = None, ready_s: float = 60
) -> RunningSystem:
    """`wf up ARGS` (wf/launch.py) in `tmp` (store in tmp/data, log in tmp/wf-up.log), ready within `ready_s`."""
    up = launch.start(tmp / "data", *args, log_path=tmp / "wf-up.log", config_dir=config_dir,
                      env={**os.environ, "WF_LOG_LEVEL": "info", **(env or {})}, cwd=tmp, with_parent=False)
    system = RunningSystem(up.proc, up.data_dir, up.log_path, f"nats://127.0.0.1:{up.port}")
    try:
        up.wait_ready(ready_s)
    except launch.NotReady:
        system.stop()
        pytest.fail(f"wf up was not ready (exit {up.proc.returncode}):\n{system.log_tail()}")
    system.read_urls()
    return system


def configs_with(tmp: Path, policies: dict[str, list[dict]]) -> Path:  # type: ignore[type-arg]
    """A copy of configs/ in `tmp` with these WorkReq names added: their policies (policies.json) and
    `go` (es.json). For start_system(config_dir=...)."""
    import json
    import shutil

    config_dir = tmp / "configs"
    shutil.copytree(REPO / "configs", config_dir)
    with open(config_dir / "policies.json", "a") as fh:
        fh.writelines(json.dumps({"Name": name, "Policies": entries}) + "\n" for name, entries in policies.items())
    with open(config_dir / "es.json", "a") as fh:
        fh.writelines(json.dumps({"Name": name, "Status": "go"}) + "\n" for name in policies)
    return config_dir


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """One running system per test module, with two job runners, quick sleeps and two small limits."""
    running = start_system(tmp_path_factory.mktemp("wf"), "--time-scale", "0.01", "--runners", "2",
                           env={"WF_MAX_REQUEST_BYTES": "200000", "WF_MAX_JOBS_PER_BLOCK": "100"})
    yield running
    assert running.stop() == 0, running.log_tail()


@pytest.fixture
async def nc(system: RunningSystem):  # type: ignore[no-untyped-def]
    client = await nats.connect(system.url)
    yield client
    await client.close()


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout_s: float = 20, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy, or fail at the deadline (never a bare sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = await probe()
        if result:
            return result
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


SERVICE_MODULES = SERVICE_ROLES  # each runs as `python -m services.<role>`


def processes(root_pid: int) -> dict[str, list[int]]:
    """`wf up`'s live processes by role: 'nats-server' and the service module names."""
    found: dict[str, list[int]] = {}
    for pid in descendants(root_pid):
        try:
            cmdline = [part.decode(errors="replace") for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if cmdline and cmdline[0].endswith("nats-server"):
            found.setdefault("nats-server", []).append(pid)
        for module in SERVICE_MODULES:
            if f"services.{module}" in cmdline:
                found.setdefault(module, []).append(pid)
    return found


def wait_for_port(port: int, timeout_s: float = 20) -> bool:
    """Whether something listens on 127.0.0.1:`port` within the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[str]:
    """A bare JetStream nats-server on a free loopback port, store in a temp dir; yields its URL."""
    from wf.up import find_nats_server

    port = free_port()
    proc = subprocess.Popen([find_nats_server(None), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for_port(port, 10):
        proc.kill()
        pytest.fail("nats-server did not start")
    yield f"nats://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


async def wait_terminal(nc, wf_id: str, timeout_s: float = 30) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Poll `wf.api.status` until the workflow has ended; returns its final StatusResp."""
    from wf import client

    async def probe():  # type: ignore[no-untyped-def]
        status = await client.status(nc, wf_id)
        return status if status["status"] in ("completed", "failed") else None

    return await eventually(probe, timeout_s, what=f"workflow {wf_id} to end")
