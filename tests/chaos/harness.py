"""What the chaos tests share: finding and killing `wf up`'s processes, a workload of real
workflows, a TCP proxy that cuts one service off NATS, and the invariants every fault must keep."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from schemas import (
    BlockEnded,
    JobCompleted,
    JobStarted,
    Submitted,
    encoder,
    event_decoder,
    status_decoder,
    subjects,
)
from services.common.bus import read_history
from services.common.topology import JOBS_STREAM, STATUS_BUCKET
from services.status import fold
from tests.conftest import REPO, RunningSystem, eventually, processes
from wf import client

T = TypeVar("T")


# ---------------------------------------------------------------- processes


def kill9(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def kill_role(system: RunningSystem, role: str, which: int = 0) -> int:
    """kill -9 one process of a role (wf up restarts it); returns its pid."""
    pids = sorted(processes(system.proc.pid).get(role, []))
    assert pids, f"no {role} process under wf up: {processes(system.proc.pid)}"
    kill9(pids[which])
    return pids[which]


async def restarted(system: RunningSystem, role: str, old_pid: int, count: int = 1, timeout_s: float = 30) -> None:
    async def probe() -> bool:
        pids = processes(system.proc.pid).get(role, [])
        return old_pid not in pids and len(pids) >= count

    await eventually(probe, timeout_s, what=f"{role} to be restarted")


def role_url(system: RunningSystem, role: str, host_port: str | None = None) -> str:
    """A service's own URL, as `wf up` gave it to that service's process (no file holds it: a
    process of the same OS user can read another's environment, which is what this test does).
    `admin`: the admin's (for a service of a role `wf up` started none of)."""
    if role == "admin":
        url = system.url
    else:
        pid = sorted(processes(system.proc.pid).get(role, []))[0]
        environ = dict(line.split("=", 1) for line in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in line)
        url = environ["WF_NATS_URL"]
    return url if host_port is None else f"{url.rpartition('@')[0]}@{host_port}"


@dataclass
class ServiceProcess:
    """One service started by the test itself (not by `wf up`), e.g. behind a TCP proxy."""

    proc: subprocess.Popen  # type: ignore[type-arg]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_service(module: str, url: str, log_path: Path, time_scale: float, config_dir: Path = REPO / "configs") -> ServiceProcess:
    env = {**os.environ, "WF_NATS_URL": url, "WF_CONFIG_DIR": str(config_dir), "WF_TIME_SCALE": str(time_scale),
           "WF_LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", f"services.{module}"], stdout=log_file, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO)
    return ServiceProcess(proc, log_path)


async def instances(nc: Client, service: str) -> int:
    """How many instances of a micro service answer `$SRV.PING` now."""
    from wf.up import ping_services

    return (await ping_services(nc)).get(service, 0)


# ---------------------------------------------------------------- workload


def sleep_workreq(blocks: int = 3, jobs: int = 4, seconds: int = 5, rate_limit: int = 4) -> bytes:
    """SleepDemo: `blocks` blocks of `jobs` sleep jobs (each `seconds` x the system's time scale)."""
    return json.dumps({
        "name": "SleepDemo", "desc": "chaos",
        "blocks": [{"desc": f"block {b}", "rate_limit": rate_limit,
                    "jobs": [{"name": "sleep", "desc": f"{b}.{j}", "args": {"seconds": str(seconds)}} for j in range(jobs)]}
                   for b in range(blocks)],
    }).encode()


async def run_workflows(nc: Client, count: int, **shape: int) -> list[str]:
    """Submit and exec `count` workflows concurrently; their ids."""

    async def one() -> str:
        reply = await client.submit(nc, sleep_workreq(**shape))
        wf_id = reply["id"]
        if reply["verdict"] == "pending":
            await eventually(lambda: _approved(nc, wf_id), 30, what=f"verdict of {wf_id}")
        await client.execute(nc, wf_id)
        return wf_id

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def _approved(nc: Client, wf_id: str) -> bool:
    return (await client.status(nc, wf_id))["verdict"] == "approved"


async def job_started(nc: Client, wf_ids: list[str], at_least: int = 1, timeout_s: float = 30) -> None:
    """Wait until at least `at_least` jobs of these workflows are running (the fault lands mid-work)."""

    async def probe() -> bool:
        running = 0
        for wf_id in wf_ids:
            status = await client.status(nc, wf_id)
            running += sum(job["status"] == "running" for block in status["blocks"] for job in block["jobs"])
        return running >= at_least

    await eventually(probe, timeout_s, what=f"{at_least} running jobs")


# ---------------------------------------------------------------- invariants


@dataclass
class Report:
    workflows: int = 0
    jobs: int = 0
    reruns: int = 0  # job attempts beyond the first (at-least-once after a runner died)
    violations: list[str] = field(default_factory=list)


async def check_invariants(
    nc: Client, wf_ids: list[str], *, reruns_allowed: bool, ignore_seqs: frozenset[int] = frozenset(),
    timeout_s: float = 90,
) -> Report:
    """Every workflow ended completed; its projection equals a fresh fold of its events; every job
    is listed once with its true outcome, has one `completed` event, and no job of an ended block
    started again; nothing is left in the work queue. `ignore_seqs`: events the test injected."""
    js = nc.jetstream()
    kv = await retrying(lambda: js.key_value(STATUS_BUCKET))
    report = Report(workflows=len(wf_ids))
    for wf_id in wf_ids:
        final, history = await _projection_settled(js, kv, wf_id, timeout_s)
        if final is None:
            report.violations.append(f"{wf_id}: did not end within {timeout_s} s")
            continue
        own = [(seq, ev) for seq, ev in history if seq not in ignore_seqs]
        fresh = _fold(history)
        if encoder.encode(final) != encoder.encode(fresh):
            report.violations.append(f"{wf_id}: the projection differs from a fresh fold of the stream")
        if fresh.status != "completed":
            report.violations.append(f"{wf_id}: ended {fresh.status}, not completed")
        jobs_listed = Counter((b, j) for b, block in enumerate(fresh.blocks) for j, _ in enumerate(block.jobs))
        completed = Counter((ev.block, ev.job) for _, ev in own if isinstance(ev, JobCompleted))
        started = Counter((ev.block, ev.job) for _, ev in own if isinstance(ev, JobStarted))
        block_ended = {ev.block: seq for seq, ev in own if isinstance(ev, BlockEnded)}
        report.jobs += len(jobs_listed)
        for (b, j) in jobs_listed:
            job = fresh.blocks[b].jobs[j]
            if job.status != "completed" or completed[(b, j)] != 1:
                report.violations.append(f"{wf_id}: job {b}.{j} is {job.status} with {completed[(b, j)]} completed events")
            report.reruns += max(0, started[(b, j)] - 1)
            if started[(b, j)] > 1 and not reruns_allowed:
                report.violations.append(f"{wf_id}: job {b}.{j} started {started[(b, j)]} times")
        for seq, ev in own:
            if isinstance(ev, JobStarted) and ev.block in block_ended and seq > block_ended[ev.block]:
                report.violations.append(f"{wf_id}: job {ev.block}.{ev.job} started after its block ended")
        info = await retrying(lambda wf_id=wf_id: js.stream_info(JOBS_STREAM, subjects_filter=subjects.job_commands(wf_id)))
        left = (info.state.subjects or {}) if info.state else {}
        if left:
            report.violations.append(f"{wf_id}: {len(left)} commands left in the work queue")
    return report


async def retrying(call: Callable[[], Awaitable[T]], timeout_s: float = 30) -> T:
    """A read that may fail while the bus recovers (reconnecting, a cluster electing a leader)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await call()
        except (nats.errors.Error, TimeoutError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.25)


def _fold(history: list[tuple[int, Any]]) -> Any:
    first = next(ev for _, ev in history if isinstance(ev, Submitted))
    status = fold.new_status(first)
    for _, ev in history:
        fold.apply(status, ev)
    return status


async def _history(js: Any, wf_id: str) -> list[tuple[int, Any]]:
    """(stream sequence, event) of every event stored for the workflow."""
    msgs = await retrying(lambda: read_history(js, wf_id))
    return [(m.metadata.sequence.stream, event_decoder.decode(m.data)) for m in msgs]


async def _projection_settled(js: Any, kv: Any, wf_id: str, timeout_s: float) -> tuple[Any, list[tuple[int, Any]]]:
    """The projection once it is terminal and agrees with the stream (it lags by milliseconds),
    with the history it was checked against; (None, []) if it never became terminal."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last, history = None, []
    while loop.time() < deadline:
        try:
            entry = await kv.get(wf_id)
            last = status_decoder.decode(entry.value) if entry.value else None
        except (nats.errors.Error, TimeoutError):  # not projected yet; or a cluster electing a leader
            last = None
        if last is not None and last.status in ("completed", "failed"):
            history = await _history(js, wf_id)
            if encoder.encode(last) == encoder.encode(_fold(history)):
                return last, history
        await asyncio.sleep(0.2)
    if last is not None and last.status in ("completed", "failed"):
        return last, history  # terminal, but not equal to the fold: the caller reports it
    return None, []


def assert_clean(report: Report, system: RunningSystem | None = None) -> None:
    assert not report.violations, "\n".join(report.violations) + ("\n" + system.log_tail(80) if system else "")


# ---------------------------------------------------------------- a network cut


class TcpProxy:
    """Loopback TCP proxy in front of NATS for one service: `stall()` stops moving bytes but keeps
    the connections open (the worst cut: nobody notices), `drop()` closes them and refuses new
    ones, `heal()` restores traffic."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            dst.close()
            self._writers.discard(dst)

    def stall(self) -> None:
        self._flowing.clear()

    def drop(self) -> None:
        self._refusing = True
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()

    def heal(self) -> None:
        self._refusing = False
        self._flowing.set()

    async def close(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
