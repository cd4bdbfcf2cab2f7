"""Measure `wf ls` over many workflows (docs/performance.md, "wf ls with 100,000 workflows").

    python -m wf.ls_bench --data-dir D [--workflows 100000] [--fill] [--recent 1000]

Against a running `wf up --data-dir D`: with `--fill`, writes that many realistic StatusResp values
straight into KV `wf_status` with D's admin credential (ids spread over the last 30 days; mostly
completed, some failed, cancelled, rejected, running, retrying, awaiting approval; five people, twelve
names), then times `wf ls` as a person (D's client.env) with and without filters, each in its own
process: seconds (wall, from `main()`: the interpreter's start and imports, about 0.3 s, not
included) and the peak memory (max RSS) of that process. `--recent N` then writes N more, submitted
now, and times `--since` over them: what the other values' age saves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats

from schemas import subjects
from services.common.ids import new_id
from services.common.topology import STATUS_BUCKET
from wf import client

PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
NAMES = [f"Work{i}" for i in range(10)] + ["SleepDemo", "EraseSatellite"]


def status_value(wf_id: str, rng: random.Random) -> dict:
    roll = rng.random()
    status, verdict, jobs_state = "completed", "approved", "completed"
    extra: dict = {}
    if roll < 0.05:
        verdict, status, jobs_state = "rejected", "not_started", "not_started"
    elif roll < 0.12:
        status, jobs_state = "failed", "failed"
    elif roll < 0.15:
        status, jobs_state = "running", "running"
    elif roll < 0.16:
        status, jobs_state = "running", "retrying"
    elif roll < 0.17:
        status, jobs_state = "not_started", "not_started"
        extra = {"approvals": [], "approvals_needed": 1}
    who = rng.choice(PEOPLE)
    blocks = []
    for b in range(rng.randint(1, 3)):
        jobs = []
        for j in range(rng.randint(1, 6)):
            state, error = jobs_state, ""
            if jobs_state == "retrying":
                state, error = "running", "attempt 1 failed, retrying: connection refused"
            elif jobs_state == "failed" and j == 0:
                error = "disk busy"
            jobs.append({"name": "diskErase", "desc": f"erase machine {b}-{j}",
                         "args": {"machine": f"aap{b:02d}{j:03d}", "site": "aap"}, "status": state, "error": error})
        blocks.append({"desc": f"block {b}", "status": "running" if state == "running" else state,
                       "has_error": jobs_state == "failed", "jobs": jobs})
    return {"id": wf_id, "name": rng.choice(NAMES), "desc": "a benchmark workflow", "verdict": verdict,
            "reason": "policy restrictJobTypes" if verdict == "rejected" else "", "status": status,
            "had_errors": jobs_state == "failed", "was_es_stopped": False, "submitted_by": who,
            "executed_by": who if status != "not_started" else "", "cancelled_by": "", "blocks": blocks, **extra}


async def fill(url: str, count: int, days: float = 30) -> None:
    rng = random.Random(18)
    nc = await nats.connect(url)
    js = nc.jetstream()
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - int(days * 86400 * 1000)
    step = max(1, (now_ms - start_ms) // count)
    started = time.perf_counter()
    pending = []
    for i in range(count):
        wf_id = new_id(start_ms + i * step)
        pending.append(js.publish(subjects.kv(STATUS_BUCKET, wf_id), json.dumps(status_value(wf_id, rng)).encode()))
        if len(pending) == 1000:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    info = await js.stream_info(f"KV_{STATUS_BUCKET}")
    print(f"filled {count} in {time.perf_counter() - started:.1f} s: the bucket holds {info.state.messages} "
          f"values, {info.state.bytes / 1e6:.1f} MB", flush=True)
    await nc.close()


CASES = [
    ("no filter (20 newest)", []),
    ("--limit 1000", ["--limit", "1000"]),
    ("--since 2h", ["--since", "2h"]),
    ("--name Work3", ["--name", "Work3"]),
    ("--status running", ["--status", "running"]),
    ("--by alice --status failed", ["--by", "alice", "--status", "failed"]),
    ("--retrying", ["--retrying"]),
    ("--stuck 1h", ["--stuck", "1h"]),
    ("--awaiting-approval", ["--awaiting-approval"]),
    ("--since 1d --name Work3", ["--since", "1d", "--name", "Work3"]),
    ("--status completed --limit 100000", ["--status", "completed", "--limit", "100000"]),
]


def time_ls(data_dir: Path, args: list[str]) -> tuple[float, float, int]:
    """(seconds, max RSS MB, rows) of one `wf ls --json ...` as a person."""
    env = {**os.environ, "WF_NATS_URL": client.nats_url(data_dir, "client")}
    code = ("import resource, sys, time; from wf.cli import main; t = time.perf_counter(); rc = main(sys.argv[1:]); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
            "sys.exit(rc)")
    # the output to a file, counted line by line (one value a line): a parent grown by reading it would
    # pass its peak RSS on to the next child (Linux keeps ru_maxrss across fork and exec)
    with tempfile.TemporaryFile() as out:
        done = subprocess.run([sys.executable, "-c", code, "ls", "--json", *args], env=env, stdout=out,
                              stderr=subprocess.PIPE, text=True, check=True)
        out.seek(0)
        rows = sum(1 for line in out if line.strip() not in (b"", b"[]"))
    seconds, rss_kb = done.stderr.split()[-2:]
    return float(seconds), int(rss_kb) / 1024, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=".wf")
    parser.add_argument("--workflows", type=int, default=100_000)
    parser.add_argument("--fill", action="store_true")
    parser.add_argument("--recent", type=int, default=0,
                        help="then write this many more, submitted now, and time --since over them")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if args.fill:
        asyncio.run(fill(client.nats_url(data_dir, "admin"), args.workflows))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"(this process: {baseline / 1024:.0f} MB)")
    print(f"{'wf ls --json':<36} {'rows':>7} {'seconds':>8} {'max RSS MB':>10}")
    for label, argv in CASES:
        seconds, rss, rows = time_ls(data_dir, argv)
        print(f"{label:<36} {rows:>7} {seconds:>8.2f} {rss:>10.0f}", flush=True)
    if args.recent:
        # --since reads only what was written since: N workflows submitted now, after everything above
        time.sleep(1.5)
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1)) + "Z"
        asyncio.run(fill(client.nats_url(data_dir, "admin"), args.recent, days=1 / 86400))
        for label, argv in [(f"--since {since} (keys)", ["--since", since, "--limit", str(args.recent)]),
                            (f"--since {since} --status running", ["--since", since, "--status", "running"])]:
            seconds, rss, rows = time_ls(data_dir, argv)
            print(f"{label:<36} {rows:>7} {seconds:>8.2f} {rss:>10.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
