"""The scenarios `wf bench` measures: one class, `Bench`, whose methods each drive the running system
from outside, over NATS, as a client would, and return what they timed; and the workloads they use.

The sizes of each run are `FULL` or `QUICK` (`--quick`); wf/bench/measure.py runs them in order."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from schemas import subjects
from services.common.consumer_reader import ConsumerReader
from services.common.topology import ES_BUCKET, STATUS_BUCKET

from .. import client
from .processes import cpu_seconds

PAUSE_WATCH_S = 2.0  # after the last pause reply, how long the bench watches for a job started (4x the target)
PAUSE_QUIET_S = 1.0  # and no job of the paused workflows started for this long
NAME = "SleepDemo"  # its policy allows `sleep`; at time scale 0 a sleep job is instant
CEILING_SUBJECTS = "bench.ceiling"  # the scratch stream of `bus_ceiling`, the bench's own


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
        kv = await self.js.key_value(STATUS_BUCKET)
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
        kv = await self.js.key_value(STATUS_BUCKET)
        watcher = await kv.watchall()
        pending = set(ids)
        started = time.perf_counter()
        await asyncio.gather(*(one(functools.partial(client.execute, self.nc, i)) for i in ids))
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
            sub = await self.nc.subscribe(subjects.job_event(wf_id, 0, 0, "started"))
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

        sub = await self.nc.subscribe(subjects.event(wf_id, "job.*.*.completed"), cb=on_completed)
        await self.nc.flush()
        await self.nc.flush()
        kv = await self.js.key_value(STATUS_BUCKET)
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
        es = await self.js.key_value(ES_BUCKET)
        kv = await self.js.key_value(STATUS_BUCKET)
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
            wf_id = subjects.workflow_id(msg.subject)
            if wf_id in count:
                count[wf_id] += 1
                seen[wf_id] = time.perf_counter()
                at[wf_id] = _event_at.decode(msg.data).at
                if wf_id in requested:
                    after[wf_id] += 1

        sub = await self.nc.subscribe(subjects.any_workflow("job.*.*.started"), cb=on_started)
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
            kv = await self.js.key_value(STATUS_BUCKET)
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
        kv = await self.js.key_value(STATUS_BUCKET)
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
        await self.js.add_stream(name=stream, subjects=[f"{CEILING_SUBJECTS}.>"])
        try:
            payload = b"x" * 200
            started = time.perf_counter()
            futures = [await self.js.publish_async(f"{CEILING_SUBJECTS}.{i % 100}", payload, headers={"Nats-Msg-Id": str(i)})
                       for i in range(n)]
            await asyncio.wait_for(asyncio.gather(*futures), 120)
            publish_per_s = n / (time.perf_counter() - started)
            # read as the services read their durables (services/common/consumer_reader.py)
            await self.js.add_consumer(stream, ConsumerConfig(durable_name="bench", ack_policy=AckPolicy.EXPLICIT))
            reader = ConsumerReader(self.nc, stream, "bench")
            await reader.subscribe()
            started, got = time.perf_counter(), 0
            while got < n:
                msgs = await reader.take(100, timeout=5)
                if not msgs:
                    raise TimeoutError(f"the bus ceiling's consumer got {got} of {n} messages")
                for msg in msgs:
                    await msg.ack()
                got += len(msgs)
            consume_per_s = n / (time.perf_counter() - started)
            await reader.unsubscribe()
        finally:
            await self.js.delete_stream(stream)
        return {"publish_async_per_s": round(publish_per_s), "fetch_ack_per_s": round(consume_per_s)}
