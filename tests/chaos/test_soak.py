"""Soak: random faults over many workflows for WF_SOAK_S seconds (default 600). Not in the default
run; `make soak` or `pytest -m soak -s tests/chaos` (WF_SOAK_S, WF_SOAK_SEED, WF_SOAK_REPORT=file.json).

Each round submits a few random workflows, waits until jobs are running, injects one random fault
(kill -9 of a random process, the NATS server included), then checks every invariant on that
round's workflows while the next round's fault has not yet started."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import nats
import pytest

from tests.conftest import start_system

from .harness import check_invariants, job_started, kill_role, restarted, run_workflows

SOAK_S = float(os.environ.get("WF_SOAK_S", "600"))
pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.soak,
              pytest.mark.timeout(SOAK_S + 600)]  # the last round may start just before the end

FAULTS = ("jobrunner", "executor", "policy", "status", "intake", "nats-server")
COUNTS = {"jobrunner": 3, "executor": 2, "policy": 1, "status": 1, "intake": 1, "nats-server": 1}


async def test_soak(tmp_path: Path) -> None:
    duration_s = SOAK_S
    seed = int(os.environ.get("WF_SOAK_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    system = start_system(tmp_path, "--time-scale", "0.2", "--runners", "3", "--executors", "2")
    nc = await nats.connect(system.url, max_reconnect_attempts=-1, reconnect_time_wait=0.25)
    faults: Counter[str] = Counter()
    totals = {"rounds": 0, "workflows": 0, "jobs": 0, "reruns": 0}
    violations: list[str] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < duration_s:
            wf_ids = await run_workflows(nc, rng.randint(2, 5), blocks=rng.randint(1, 4), jobs=rng.randint(1, 5),
                                         rate_limit=rng.randint(1, 5))
            await job_started(nc, wf_ids)
            fault = rng.choice(FAULTS)
            which = rng.randrange(COUNTS[fault])
            pid = await kill_role(system, fault, which)
            faults[fault] += 1
            await restarted(system, fault, pid, count=COUNTS[fault])
            report = await check_invariants(nc, wf_ids, reruns_allowed=True)
            totals["rounds"] += 1
            totals["workflows"] += report.workflows
            totals["jobs"] += report.jobs
            totals["reruns"] += report.reruns
            violations += [f"round {totals['rounds']} ({fault}): {v}" for v in report.violations]
    finally:
        await nc.close()
        code = system.stop()
    summary = {"seed": seed, "seconds": round(time.monotonic() - started), **totals,
               "faults_injected": sum(faults.values()), "faults": dict(faults), "invariant_violations": len(violations)}
    print("\nsoak:", json.dumps(summary))
    if os.environ.get("WF_SOAK_REPORT"):
        Path(os.environ["WF_SOAK_REPORT"]).write_text(json.dumps({**summary, "violations": violations}, indent=2))
    assert code == 0, system.log_tail()
    assert not violations, "\n".join(violations[:20])
