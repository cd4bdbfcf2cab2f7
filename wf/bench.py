"""`wf bench [--quick] [--json]`: what the control plane costs, on a system it starts itself.

Every figure is measured from outside, over NATS, as a client sees it; the services run as their
own processes (`wf up`) at `--time-scale 0`, so only the control plane's own cost is measured.
Figures measured several times are reported as the median with the range (min, max)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.client import Client

from services.common.settings import REPO_ROOT

from . import client
from .up import die_with_parent, free_port

PAUSE_WATCH_S = 2.0  # after the last pause reply, how long the bench watches for a job started (4x the target)
PAUSE_QUIET_S = 1.0  # and no job of the paused workflows started for this long
PACED_SHARE = 0.5  # the paced submit run offers this share of the capacity the saturated run measured
NAME = "SleepDemo"  # its policy allows `sleep`; at time scale 0 a sleep job is instant


@dataclass(frozen=True)
class Sizes:
    runs: int
    big: tuple[int, int, int]  # blocks, jobs per block, rate_limit
    small: tuple[int, int]  # workflows at once, jobs each
    submit_clients: int
    submits_per_client: int
    exec_samples: int
    es_workflows: int
    scaling: tuple[int, ...]
    ceiling_msgs: int


FULL = Sizes(runs=3, big=(10, 1000, 200), small=(200, 5), submit_clients=50, submits_per_client=10,
             exec_samples=30, es_workflows=20, scaling=(1_000, 10_000, 50_000), ceiling_msgs=20_000)
QUICK = Sizes(runs=3, big=(10, 200, 200), small=(50, 5), submit_clients=50, submits_per_client=2,
              exec_samples=10, es_workflows=20, scaling=(1_000, 5_000), ceiling_msgs=5_000)


def workreq(blocks: int, per_block: int, rate: int, name: str = NAME) -> bytes:
    job = {"name": "sleep", "args": {"seconds": "1"}}
    return json.dumps({"name": name, "blocks": [{"rate_limit": rate, "jobs": [job] * per_block}] * blocks}).encode()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def spread(values: list[float], digits: int = 1) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits), "max": round(max(values), digits)}


_status_head = msgspec.json.Decoder(dict[str, Any])


class _Head(msgspec.Struct):
    status: str


_head = msgspec.json.Decoder(_Head)


class _At(msgspec.Struct):
    at: float


_event_at = msgspec.json.Decoder(_At)


def workflow_status(value: bytes | None) -> str:
    """The workflow's own status in a StatusResp (decoded; its jobs have a `status` field too)."""
    return _head.decode(value).status if value else ""


class Bench:
    def __init__(self, nc: Client, sizes: Sizes, root_pid: int | None = None) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.sizes = sizes
        self.root_pid = root_pid
        self.cpu_per_job: list[dict[str, float]] = []  # ms of CPU per job, by process, one per big run
        self.cpu_per_submit: list[dict[str, float]] = []
        self.submit_rates: list[float] = []  # submits per second over each latency run

    def _cpu_now(self) -> dict[str, float]:
        seconds = cpu_seconds(self.root_pid) if self.root_pid is not None else {}
        return {**seconds, "bench (client)": time.process_time()}

    @staticmethod
    def _cpu_ms_per(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
        return {name: round((after[name] - before.get(name, 0.0)) * 1000 / count, 3) for name in after}

    async def approved(self, body: bytes) -> str:
        reply = await client.submit(self.nc, body)
        assert reply["verdict"] == "approved", reply
        return reply["id"]

    async def run_to_end(self, body: bytes) -> float:
        """Seconds from the exec request to the terminal status in `wf_status`."""
        wf_id = await self.approved(body)
        kv = await self.js.key_value("wf_status")
        watcher = await kv.watch(wf_id)
        started = time.perf_counter()
        await client.execute(self.nc, wf_id)
        try:
            while True:
                entry = await watcher.updates(timeout=600)
                state = workflow_status(entry.value) if entry is not None else ""
                if state == "completed":
                    return time.perf_counter() - started
                if state == "failed":
                    raise RuntimeError(f"benchmark workflow {wf_id} failed")
        finally:
            await watcher.stop()

    async def throughput_big(self) -> float:
        blocks, per_block, rate = self.sizes.big
        before = self._cpu_now()
        seconds = await self.run_to_end(workreq(blocks, per_block, rate))
        self.cpu_per_job.append(self._cpu_ms_per(before, self._cpu_now(), blocks * per_block))
        return blocks * per_block / seconds

    async def throughput_small(self) -> float:
        count, jobs = self.sizes.small
        gate = asyncio.Semaphore(8)  # below intake's in-flight limit

        async def one(call: Callable[[], Awaitable[Any]]) -> Any:
            async with gate:
                return await call()

        ids = await asyncio.gather(*(one(lambda: self.approved(workreq(1, jobs, jobs))) for _ in range(count)))
        kv = await self.js.key_value("wf_status")
        watcher = await kv.watchall()
        pending = set(ids)
        started = time.perf_counter()
        await asyncio.gather(*(one(lambda i=i: client.execute(self.nc, i)) for i in ids))
        try:
            while pending:
                entry = await watcher.updates(timeout=600)
                if entry is not None and entry.key in pending and workflow_status(entry.value) == "completed":
                    pending.discard(entry.key)
        finally:
            await watcher.stop()
        return count * jobs / (time.perf_counter() - started)

    async def submit_latencies(self) -> list[float]:
        body = workreq(1, 1, 1)
        latencies: list[float] = []

        async def one_client() -> None:
            for _ in range(self.sizes.submits_per_client):
                started = time.perf_counter()
                await client.submit(self.nc, body)
                latencies.append((time.perf_counter() - started) * 1000)

        before = self._cpu_now()
        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(self.sizes.submit_clients)))
        self.submit_rates.append(len(latencies) / (time.perf_counter() - started))
        self.cpu_per_submit.append(self._cpu_ms_per(before, self._cpu_now(), len(latencies)))
        return latencies

    async def paced_submit_latencies(self, rate: float) -> list[float]:
        """The same clients and submits, but each client submits on a clock (every `clients / rate`
        seconds, from a random phase) instead of as soon as its last reply came: an offered load of
        `rate` submits/s, below the capacity, so the latency is the path's own plus the queueing of
        a system that is busy but not saturated. Each submit starts when due, whatever the replies
        to earlier ones are doing (no coordinated omission)."""
        body = workreq(1, 1, 1)
        latencies: list[float] = []
        interval = self.sizes.submit_clients / rate

        async def timed() -> None:
            started = time.perf_counter()
            await client.submit(self.nc, body)
            latencies.append((time.perf_counter() - started) * 1000)

        async def one_client(start: float) -> None:
            tasks = []
            for k in range(self.sizes.submits_per_client):
                await asyncio.sleep(max(0.0, start + k * interval - time.perf_counter()))
                tasks.append(asyncio.create_task(timed()))
            await asyncio.gather(*tasks)

        now = time.perf_counter()
        await asyncio.gather(*(one_client(now + random.uniform(0, interval)) for _ in range(self.sizes.submit_clients)))
        return latencies

    async def exec_to_first_job(self) -> list[float]:
        latencies = []
        for _ in range(self.sizes.exec_samples):
            wf_id = await self.approved(workreq(1, 1, 1))
            sub = await self.nc.subscribe(f"wf.evt.{wf_id}.job.0.0.started")
            await self.nc.flush()
            await self.nc.flush()
            started = time.perf_counter()
            await client.execute(self.nc, wf_id)
            await sub.next_msg(timeout=10)
            latencies.append((time.perf_counter() - started) * 1000)
            await sub.unsubscribe()
        return latencies

    async def projection_lag(self) -> tuple[list[float], list[float]]:
        """During a big workflow, from each job's `completed` event to `wf_status` showing it:
        - by the system's own clocks: the event's `at` (its publisher's clock, just before publishing)
          to the server's timestamp on the KV update (both this host's clock);
        - as this client sees them: the event's arrival here to the update's arrival here (adds this
          process's own delays: it decodes every 1 MB update while 2,000 events a second arrive)."""
        blocks, per_block, rate = self.sizes.big
        wf_id = await self.approved(workreq(blocks, per_block, rate))
        seen: dict[tuple[int, int], float] = {}
        published: dict[tuple[int, int], float] = {}

        async def on_completed(msg: Any) -> None:
            _, _, _, _, b, j, _ = msg.subject.split(".")
            seen[(int(b), int(j))] = time.perf_counter()
            published[(int(b), int(j))] = _event_at.decode(msg.data).at

        sub = await self.nc.subscribe(f"wf.evt.{wf_id}.job.*.*.completed", cb=on_completed)
        await self.nc.flush()
        await self.nc.flush()
        kv = await self.js.key_value("wf_status")
        watcher = await kv.watch(wf_id)
        lags: list[float] = []
        seen_lags: list[float] = []
        shown: set[tuple[int, int]] = set()
        await client.execute(self.nc, wf_id)
        try:
            while True:
                entry = await watcher.updates(timeout=600)
                if entry is None or not entry.value:
                    continue
                arrived = time.perf_counter()
                stored = entry.created.timestamp() if entry.created is not None else time.time()
                status = _status_head.decode(entry.value)
                for b, block in enumerate(status["blocks"]):
                    for j, job in enumerate(block["jobs"]):
                        if job["status"] == "completed" and (b, j) not in shown and (b, j) in seen:
                            shown.add((b, j))
                            lags.append((stored - published[(b, j)]) * 1000)
                            seen_lags.append((arrived - seen[(b, j)]) * 1000)
                if status["status"] in ("completed", "failed"):
                    return lags, seen_lags
        finally:
            await watcher.stop()
            await sub.unsubscribe()

    async def emergency_stop(self) -> list[float]:
        """From `kv put wf_es NAME stop` to each of N running workflows' terminal status."""
        es = await self.js.key_value("wf_es")
        kv = await self.js.key_value("wf_status")
        ids = [await self.approved(workreq(1, 5000, 1)) for _ in range(self.sizes.es_workflows)]
        watcher = await kv.watchall()
        running: set[str] = set()
        ended: dict[str, float] = {}
        for wf_id in ids:
            await client.execute(self.nc, wf_id)
        try:
            while len(running) < len(ids):  # every one has started work
                entry = await watcher.updates(timeout=60)
                if entry is not None and entry.key in ids and workflow_status(entry.value) == "running":
                    running.add(entry.key)
            put_at = time.perf_counter()
            await es.put(NAME, b"stop")
            while len(ended) < len(ids):
                entry = await watcher.updates(timeout=60)
                if entry is not None and entry.key in ids and workflow_status(entry.value) == "failed":
                    ended.setdefault(entry.key, (time.perf_counter() - put_at) * 1000)
        finally:
            await watcher.stop()
            await es.put(NAME, b"go")
        await asyncio.sleep(0.2)  # let every service see `go` again before the next measurement
        return list(ended.values())

    async def pause_latency(self) -> dict[str, list[float]]:
        """N workflows of 5,000 instant jobs at rate 1 being dispatched (each has started a few jobs),
        all paused at once (`wf.api.pause`): for each, from its pause request to the last of its
        `job.started` events this client sees, 0 if none came after the request (how long until no
        new job starts); the same to the last one's `at` (the runner's clock as it started the job;
        this host's clock); and the pause's reply time. A workflow counts as done when none of them
        has started a job for `PAUSE_QUIET_S` and `PAUSE_WATCH_S` have passed since the last reply
        (a later start would still be caught and counted). Then each must show `paused` in
        `wf_status`, and is cancelled and ended so that nothing is left running."""
        ids = [await self.approved(workreq(1, 5000, 1)) for _ in range(self.sizes.es_workflows)]
        count = dict.fromkeys(ids, 0)
        seen: dict[str, float] = {}  # each workflow's last `job.started`: its arrival here (perf_counter)
        at: dict[str, float] = {}  # and its `at` (time.time() clock)
        after: dict[str, int] = dict.fromkeys(ids, 0)  # starts seen after the pause request
        requested: dict[str, float] = {}
        requested_wall: dict[str, float] = {}

        async def on_started(msg: Any) -> None:
            wf_id = msg.subject.split(".")[2]
            if wf_id in count:
                count[wf_id] += 1
                seen[wf_id] = time.perf_counter()
                at[wf_id] = _event_at.decode(msg.data).at
                if wf_id in requested:
                    after[wf_id] += 1

        sub = await self.nc.subscribe("wf.evt.*.job.*.*.started", cb=on_started)
        await self.nc.flush()
        await self.nc.flush()
        replies: list[float] = []
        executed: list[str] = []
        try:
            for wf_id in ids:
                await client.execute(self.nc, wf_id)
                executed.append(wf_id)
            deadline = time.perf_counter() + 60
            while min(count.values()) < 3:  # every one is mid-dispatch
                if time.perf_counter() > deadline:
                    raise RuntimeError("benchmark workflows did not start their jobs")
                await asyncio.sleep(0.01)

            async def pause(wf_id: str) -> None:
                requested_wall[wf_id] = time.time()
                requested[wf_id] = time.perf_counter()
                await client.pause(self.nc, wf_id)
                replies.append((time.perf_counter() - requested[wf_id]) * 1000)

            await asyncio.gather(*(pause(wf_id) for wf_id in ids))
            watch_until = time.perf_counter() + PAUSE_WATCH_S
            while (now := time.perf_counter()) < watch_until or now - max(seen.values()) < PAUSE_QUIET_S:
                if now > watch_until + 30:
                    break  # still starting jobs: the figure shows it
                await asyncio.sleep(0.05)
            latencies = [max(0.0, (seen[i] - requested[i]) * 1000) for i in ids]
            by_clock = [max(0.0, (at[i] - requested_wall[i]) * 1000) for i in ids]
            kv = await self.js.key_value("wf_status")
            for wf_id in ids:
                deadline = time.perf_counter() + 10
                while (state := workflow_status((await kv.get(wf_id)).value)) != "paused":
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"benchmark workflow {wf_id} is {state!r}, not paused")
                    await asyncio.sleep(0.05)
        finally:
            await sub.unsubscribe()
            await self._end(executed)
        return {"latencies": latencies, "by_clock": by_clock, "replies": replies,
                "started_after": [float(n) for n in after.values()]}

    async def _end(self, ids: list[str]) -> None:
        """Cancel the (executed) workflows and wait until `wf_status` shows each ended."""
        kv = await self.js.key_value("wf_status")
        watcher = await kv.watchall()
        try:
            pending = set(ids)
            for wf_id in ids:
                try:
                    await client.cancel(self.nc, wf_id)
                except client.WfError:  # never executed, or ended already
                    pending.discard(wf_id)
            while pending:
                entry = await watcher.updates(timeout=60)
                if entry is not None and entry.key in pending and workflow_status(entry.value) in ("completed", "failed"):
                    pending.discard(entry.key)
        finally:
            await watcher.stop()
        await asyncio.sleep(0.2)

    async def scaling(self) -> tuple[dict[str, float], dict[str, float]]:
        """Per job, for one workflow of each size (blocks of 1,000): milliseconds of pipeline time, and
        milliseconds of CPU of the whole system (every service and nats-server). The median of `runs`
        workflows for every size but the largest (a 1,000-job workflow lasts a few tenths of a second,
        so one run of it varies by half), one workflow of the largest."""
        costs, cpu = {}, {}
        for jobs in self.sizes.scaling:
            per_block = min(jobs, 1000)
            runs = 1 if jobs == max(self.sizes.scaling) else self.sizes.runs
            seconds, cpu_s = [], []
            for _ in range(runs):
                before = self._cpu_now()
                seconds.append(await self.run_to_end(workreq(jobs // per_block, per_block, 200)))
                after = self._cpu_now()
                cpu_s.append(sum(after[k] - before.get(k, 0.0) for k in after if k != "bench (client)"))
            costs[str(jobs)] = round(statistics.median(seconds) / jobs * 1000, 3)
            cpu[str(jobs)] = round(statistics.median(cpu_s) / jobs * 1000, 3)
        return costs, cpu

    async def bus_ceiling(self) -> dict[str, float]:
        """The bus's own rates on this machine, in the same run: publish with ack, consume and ack."""
        stream, n = "BENCH_CEILING", self.sizes.ceiling_msgs
        await self.js.add_stream(name=stream, subjects=["bench.ceiling.>"])
        try:
            payload = b"x" * 200
            started = time.perf_counter()
            futures = [await self.js.publish_async(f"bench.ceiling.{i % 100}", payload, headers={"Nats-Msg-Id": str(i)})
                       for i in range(n)]
            await asyncio.wait_for(asyncio.gather(*futures), 120)
            publish_per_s = n / (time.perf_counter() - started)
            sub = await self.js.pull_subscribe("bench.ceiling.>", durable="bench", stream=stream)
            started, got = time.perf_counter(), 0
            while got < n:
                msgs = await sub.fetch(100, timeout=5)
                for msg in msgs:
                    await msg.ack()
                got += len(msgs)
            consume_per_s = n / (time.perf_counter() - started)
            await sub.unsubscribe()
        finally:
            await self.js.delete_stream(stream)
        return {"publish_async_per_s": round(publish_per_s), "fetch_ack_per_s": round(consume_per_s)}


# Bus operations one job costs, by design (see docs/performance.md):
PUBLISHES_PER_JOB = 3  # the command (executor), started and completed (runner)
DELIVERIES_PER_JOB = 7  # command to a runner (+ack), 2 events to the executor, 2 events to wf-status (+acks)


def _children(root_pid: int) -> list[tuple[str, str, str]]:
    """(name, /proc status, /proc stat) of each process `wf up` started: its services and nats-server."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != root_pid:
            continue
        module = next((part.decode() for part in cmdline if part.startswith(b"services.")), None)
        name = f"wf-{module.split('.')[1]}" if module else ("nats-server" if b"nats-server" in cmdline[0] else None)
        if name:
            found.append((name, status, stat))
    return found


def peak_rss_mb(root_pid: int) -> dict[str, float]:
    """Peak resident memory (VmHWM) of each service process under `wf up`, by service name."""
    peaks: dict[str, float] = {}
    for name, status, _ in _children(root_pid):
        hwm = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
        if hwm:
            peaks[name] = max(peaks.get(name, 0.0), round(int(hwm.split()[1]) / 1024, 1))
    return peaks


def cpu_seconds(root_pid: int) -> dict[str, float]:
    """CPU time (user + system) used so far by each service (its replicas together) and nats-server."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for name, _, stat in _children(root_pid):
        fields = stat.rsplit(")", 1)[1].split()
        used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


def _median_by_process(samples: list[dict[str, float]]) -> dict[str, float]:
    names = sorted({name for sample in samples for name in sample})
    per = {name: round(statistics.median(sample.get(name, 0.0) for sample in samples), 3) for name in names}
    return {**per, "total": round(sum(per.values()), 3)}


class System:
    """`wf up` in a subprocess, on a free loopback port, in a temporary directory."""

    def __init__(self, sync: str = "") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wf-bench-"))
        self.port = free_port()
        env = {**os.environ, "WF_MAX_IN_FLIGHT": "200", "WF_LOG_LEVEL": "warning"}
        argv = [sys.executable, "-m", "wf.cli", "up", "--nats-port", str(self.port), "--data-dir", str(self.dir / "data"),
                "--config-dir", str(REPO_ROOT / "configs"), "--time-scale", "0", "--runners", "2", "--log-level", "warning"]
        if sync:
            argv += ["--sync", sync]
        self.log = open(self.dir / "wf-up.log", "wb")
        # it dies with the bench, even when the bench is killed (no orphaned system left running)
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=die_with_parent)  # noqa: PLW1509 (one prctl call, no locks)

    async def ready(self) -> str:
        deadline = time.monotonic() + 60
        while not (self.dir / "data" / "client.env").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"wf bench: the system did not start; see {self.dir / 'wf-up.log'}")
            await asyncio.sleep(0.1)
        # the admin role: the bench creates a scratch stream and flips an emergency stop
        return (self.dir / "data" / "admin.env").read_text().strip().partition("=")[2]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.log.close()


async def measure(sizes: Sizes, progress: Callable[[str], None], sync: str = "") -> dict[str, Any]:
    system = System(sync)
    try:
        nc = await nats.connect(await system.ready())
        bench = Bench(nc, sizes, system.proc.pid)
        try:
            progress("bus ceiling")
            ceiling = await bench.bus_ceiling()
            progress("throughput, one big workflow")
            big = [await bench.throughput_big() for _ in range(sizes.runs)]
            progress("throughput, many small workflows")
            small = [await bench.throughput_small() for _ in range(sizes.runs)]
            progress("submit latency")
            submits = [await bench.submit_latencies() for _ in range(sizes.runs)]
            paced_rate = round(statistics.median(bench.submit_rates) * PACED_SHARE)
            progress(f"submit latency at {paced_rate} submits/s")
            paced = [await bench.paced_submit_latencies(paced_rate) for _ in range(sizes.runs)]
            progress("exec to first job")
            execs = [await bench.exec_to_first_job() for _ in range(sizes.runs)]
            progress("projection lag")
            lag_runs = [await bench.projection_lag() for _ in range(sizes.runs)]
            progress("emergency stop")
            stops = [await bench.emergency_stop() for _ in range(sizes.runs)]
            progress("pause")
            pauses = [await bench.pause_latency() for _ in range(sizes.runs)]
            progress("scaling")
            scaling, scaling_cpu = await bench.scaling()
            rss = peak_rss_mb(system.proc.pid)
        finally:
            await nc.close()
    finally:
        system.stop()
    blocks, per_block, rate = sizes.big
    achievable = 1 / (PUBLISHES_PER_JOB / ceiling["publish_async_per_s"] + DELIVERIES_PER_JOB / ceiling["fetch_ack_per_s"])
    big_median = statistics.median(big)
    smallest, largest = str(min(sizes.scaling)), str(max(sizes.scaling))
    return {
        "quick": sizes is QUICK,
        "sync": sync or "default",
        "cores": os.cpu_count(),
        "throughput_big": {"jobs": blocks * per_block, "shape": f"{blocks} blocks x {per_block}, rate_limit {rate}",
                           "jobs_per_s": spread(big, 0)},
        "throughput_small": {"workflows": sizes.small[0], "jobs_each": sizes.small[1], "jobs_per_s": spread(small, 0)},
        # every client submits again as soon as it has its reply: the rate is the system's capacity,
        # and the mean latency is clients / rate (Little's law)
        "submit_latency_ms": {"clients": sizes.submit_clients, "p50": spread([pct(r, 50) for r in submits]),
                              "p99": spread([pct(r, 99) for r in submits]),
                              "submits_per_s": spread(bench.submit_rates, 0)},
        # the same 50 clients submitting on a clock at half that capacity: a busy system, not a saturated one
        "submit_latency_paced_ms": {"clients": sizes.submit_clients, "submits_per_s": paced_rate,
                                    "p50": spread([pct(r, 50) for r in paced]), "p99": spread([pct(r, 99) for r in paced])},
        "exec_to_first_job_ms": {"p50": spread([pct(r, 50) for r in execs]), "p99": spread([pct(r, 99) for r in execs])},
        "projection_lag_ms": {"p50": spread([pct(lags, 50) for lags, _ in lag_runs]),
                              "p99": spread([pct(lags, 99) for lags, _ in lag_runs]),
                              "samples": sum(len(lags) for lags, _ in lag_runs)},
        "projection_lag_seen_by_client_ms": {"p50": spread([pct(seen, 50) for _, seen in lag_runs]),
                                             "p99": spread([pct(seen, 99) for _, seen in lag_runs])},
        "emergency_stop_ms": {"workflows": sizes.es_workflows, "p50": spread([pct(r, 50) for r in stops]),
                              "p99": spread([pct(r, 99) for r in stops])},
        # the same N workflows (rate 1, mid-dispatch), each paused at once: pause request -> its last
        # `job.started` seen here (0 if none after the request); also to that event's `at`, the
        # runner's clock (`p99_by_job_clock`), the pause replies, and the most jobs of one workflow
        # seen starting after its pause request
        "pause_ms": {"workflows": sizes.es_workflows,
                     "p50": spread([pct(r["latencies"], 50) for r in pauses]),
                     "p99": spread([pct(r["latencies"], 99) for r in pauses]),
                     "p99_by_job_clock": spread([pct(r["by_clock"], 99) for r in pauses]),
                     "reply_p50": spread([pct(r["replies"], 50) for r in pauses]),
                     "reply_p99": spread([pct(r["replies"], 99) for r in pauses]),
                     "started_after_request_max": int(max(max(r["started_after"]) for r in pauses))},
        "peak_rss_mb": rss,
        # CPU time of each process per job of the big workflow, and per submit (medians of the runs)
        "cpu_ms_per_job": _median_by_process(bench.cpu_per_job),
        "cpu_ms_per_submit": _median_by_process(bench.cpu_per_submit),
        "scaling_ms_per_job": {**scaling, "ratio": round(scaling[largest] / scaling[smallest], 2)},
        "scaling_cpu_ms_per_job": {**scaling_cpu, "ratio": round(scaling_cpu[largest] / scaling_cpu[smallest], 2)},
        # one connection's rates bound a pipeline that would run on one connection; ours spreads
        # the bus work over several processes, so the ratio can pass 1
        "bus": {**ceiling, "publishes_per_job": PUBLISHES_PER_JOB, "deliveries_per_job": DELIVERIES_PER_JOB,
                "one_connection_jobs_per_s": round(achievable),
                "pipeline_vs_one_connection": round(big_median / achievable, 2)},
    }


def report(result: dict[str, Any]) -> str:
    def mr(d: dict[str, float], unit: str = "") -> str:
        return f"{d['median']}{unit} (range {d['min']}-{d['max']})"

    r = result
    lines = [
        f"wf bench{' --quick' if r['quick'] else ''}{' --sync ' + r['sync'] if r.get('sync', 'default') != 'default' else ''} "
        f"on {r['cores']} cores (medians of several runs, with range)",
        f"  throughput, {r['throughput_big']['jobs']} jobs in one workflow ({r['throughput_big']['shape']}): "
        f"{mr(r['throughput_big']['jobs_per_s'], ' jobs/s')}",
        f"  throughput, {r['throughput_small']['workflows']} workflows of {r['throughput_small']['jobs_each']} jobs at once: "
        f"{mr(r['throughput_small']['jobs_per_s'], ' jobs/s')}",
        f"  submit latency, {r['submit_latency_ms']['clients']} concurrent clients: p50 {mr(r['submit_latency_ms']['p50'], ' ms')}, "
        f"p99 {mr(r['submit_latency_ms']['p99'], ' ms')}, at {mr(r['submit_latency_ms']['submits_per_s'], ' submits/s')}",
        f"  submit latency, the same clients on a clock at {r['submit_latency_paced_ms']['submits_per_s']} submits/s "
        f"(half that): p50 {mr(r['submit_latency_paced_ms']['p50'], ' ms')}, p99 {mr(r['submit_latency_paced_ms']['p99'], ' ms')}",
        f"  exec to first job started: p50 {mr(r['exec_to_first_job_ms']['p50'], ' ms')}, p99 {mr(r['exec_to_first_job_ms']['p99'], ' ms')}",
        f"  projection lag (event published to wf_status stored) at full load: p50 {mr(r['projection_lag_ms']['p50'], ' ms')}, "
        f"p99 {mr(r['projection_lag_ms']['p99'], ' ms')}; as this client sees it: "
        f"p99 {mr(r['projection_lag_seen_by_client_ms']['p99'], ' ms')}",
        f"  emergency stop, {r['emergency_stop_ms']['workflows']} workflows running: p50 {mr(r['emergency_stop_ms']['p50'], ' ms')}, "
        f"p99 {mr(r['emergency_stop_ms']['p99'], ' ms')}",
        *([f"  pause, {r['pause_ms']['workflows']} workflows running: p50 {mr(r['pause_ms']['p50'], ' ms')}, "
           f"p99 {mr(r['pause_ms']['p99'], ' ms')} (target 500); by the runner's clock p99 "
           f"{mr(r['pause_ms']['p99_by_job_clock'], ' ms')}; pause reply p99 {mr(r['pause_ms']['reply_p99'], ' ms')}; "
           f"at most {r['pause_ms']['started_after_request_max']} job(s) of one workflow seen starting after its request"]
          if "pause_ms" in r else []),
        "  scaling, ms per job: " + ", ".join(f"{k} jobs {v}" for k, v in r["scaling_ms_per_job"].items() if k != "ratio")
        + f" (ratio largest/smallest {r['scaling_ms_per_job']['ratio']}); CPU ms per job: "
        + ", ".join(f"{k} jobs {v}" for k, v in r["scaling_cpu_ms_per_job"].items() if k != "ratio")
        + f" (ratio {r['scaling_cpu_ms_per_job']['ratio']})",
        "  peak RSS: " + ", ".join(f"{k} {v} MB" for k, v in sorted(r["peak_rss_mb"].items())),
        "  CPU ms per job (big workflow): " + ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_job"].items()),
        "  CPU ms per submit: " + ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_submit"].items()),
        f"  bus ceiling here: publish_async {r['bus']['publish_async_per_s']}/s, fetch+ack {r['bus']['fetch_ack_per_s']}/s; "
        f"a job costs {r['bus']['publishes_per_job']} publishes + {r['bus']['deliveries_per_job']} deliveries, so one "
        f"connection could carry {r['bus']['one_connection_jobs_per_s']} jobs/s; the pipeline (several processes) reached "
        f"{r['bus']['pipeline_vs_one_connection']}x that",
    ]
    return "\n".join(lines)


def run(quick: bool, as_json: bool, sync: str = "") -> int:
    sizes = QUICK if quick else FULL

    def progress(step: str) -> None:
        print(f"... {step}", file=sys.stderr, flush=True)

    result = asyncio.run(measure(sizes, progress, sync))
    print(json.dumps(result) if as_json else report(result))
    return 0
