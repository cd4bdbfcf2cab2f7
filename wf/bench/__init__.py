"""`wf bench [--quick] [--json]`: what the control plane costs, on a system it starts itself.

Every figure is measured from outside, over NATS, as a client sees it; the services run as their
own processes (`wf up`) at `--time-scale 0`, so only the control plane's own cost is measured.
Figures measured several times are reported as the median with the range (min, max).

- wf/bench/scenarios.py: the scenarios (class Bench) and their workloads and sizes;
- wf/bench/measure.py: the system it starts (wf/launch.py) and the runs reduced to figures;
- wf/bench/processes.py: CPU time and peak memory of each process, from /proc;
- wf/bench/report.py: the figures as text."""

from __future__ import annotations

import asyncio
import json
import sys

from .measure import measure
from .report import report
from .scenarios import FULL, QUICK


def run(quick: bool, as_json: bool, sync: str = "") -> int:
    sizes = QUICK if quick else FULL

    def progress(step: str) -> None:
        print(f"... {step}", file=sys.stderr, flush=True)

    result = asyncio.run(measure(sizes, progress, sync))
    print(json.dumps(result) if as_json else report(result))
    return 0
