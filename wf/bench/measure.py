"""`wf bench`'s measurement: start a system (`wf up` at `--time-scale 0`, through wf/launch.py), run
every scenario of wf/bench/scenarios.py on it several times, and reduce the runs to one result: a
dict of figures (medians with their range), what `wf bench --json` prints."""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats

from services.common.settings import REPO_ROOT

from .. import launch
from .processes import peak_rss_mb
from .scenarios import QUICK, Bench, Sizes

PACED_SHARE = 0.5  # the paced submit run offers this share of the capacity the saturated run measured
# Bus operations one job costs, by design (see docs/performance.md):
PUBLISHES_PER_JOB = 3  # the command (executor), started and completed (runner)
DELIVERIES_PER_JOB = 7  # command to a runner (+ack), 2 events to the executor, 2 events to wf-status (+acks)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def spread(values: list[float], digits: int = 1) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits), "max": round(max(values), digits)}


def _median_by_process(samples: list[dict[str, float]]) -> dict[str, float]:
    names = sorted({name for sample in samples for name in sample})
    per = {name: round(statistics.median(sample.get(name, 0.0) for sample in samples), 3) for name in names}
    return {**per, "total": round(sum(per.values()), 3)}


class System:
    """`wf up` in a subprocess, on a free loopback port, in a temporary directory."""

    def __init__(self, sync: str = "") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wf-bench-"))
        env = {**os.environ, "WF_MAX_IN_FLIGHT": "200", "WF_LOG_LEVEL": "warning"}
        args = ["--time-scale", "0", "--runners", "2", "--log-level", "warning"]
        if sync:
            args += ["--sync", sync]
        # it dies with the bench, even when the bench is killed (no orphaned system left running)
        self.up = launch.start(self.dir / "data", *args, log_path=self.dir / "wf-up.log",
                               config_dir=REPO_ROOT / "configs", env=env)
        self.proc = self.up.proc

    async def ready(self) -> str:
        try:
            await self.up.ready(60)
        except launch.NotReady:
            raise SystemExit(f"wf bench: the system did not start; see {self.dir / 'wf-up.log'}") from None
        # the admin role: the bench creates a scratch stream and flips an emergency stop
        return self.up.url("admin")

    def stop(self) -> None:
        self.up.stop(timeout_s=60)


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
