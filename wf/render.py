"""Plain-text views of a StatusResp for `wf status`."""

from __future__ import annotations

import time
from typing import Any

TERMINAL = ("completed", "failed")


def _counts(jobs: list[dict[str, Any]]) -> str:
    done = sum(job["status"] in TERMINAL for job in jobs)
    failed = sum(job["status"] == "failed" for job in jobs)
    running = sum(job["status"] == "running" for job in jobs)
    text = f"{done}/{len(jobs)} done"
    if running:
        text += f", {running} running"
    if failed:
        text += f", {failed} failed"
    return text


def _bar(jobs: list[dict[str, Any]], width: int = 20) -> str:
    done = sum(job["status"] in TERMINAL for job in jobs)
    filled = round(width * done / len(jobs)) if jobs else width
    return "[" + "#" * filled + "." * (width - filled) + "]"


def render(status: dict[str, Any]) -> str:
    """The whole view: workflow summary, a line per block, the running block's jobs in detail."""
    flags = [flag for flag in ("had_errors", "was_es_stopped") if status.get(flag)]
    head = f"{status['id']}  {status['name']}  verdict={status['verdict']}  status={status['status']}"
    if flags:
        head += "  " + " ".join(flags)
    lines = [head]
    if status.get("reason"):
        lines.append(f"  reason: {status['reason']}")
    for b, block in enumerate(status["blocks"]):
        jobs = block["jobs"]
        err = "  has_error" if block["has_error"] else ""
        lines.append(f"  block {b:>2} {_bar(jobs)} {block['status']:<11} {_counts(jobs):<28} {block['desc']}{err}")
        if block["status"] == "running" or (block["has_error"] and status["status"] in TERMINAL):
            for j, job in enumerate(jobs):
                if block["status"] != "running" and job["status"] != "failed":
                    continue
                args = " ".join(f"{k}={v}" for k, v in sorted(job["args"].items()))
                error = f"  error: {job['error']}" if job["error"] else ""
                lines.append(f"      job {j:<4} {job['status']:<11} {job['name']} {args}{error}")
    return "\n".join(lines)


def summary_line(status: dict[str, Any]) -> str:
    """One line, for logs and pipes: changes only when progress does."""
    blocks = status["blocks"]
    current = next((b for b, block in enumerate(blocks) if block["status"] == "running"), None)
    jobs = [job for block in blocks for job in block["jobs"]]
    where = f"block {current}/{len(blocks)}" if current is not None else f"{len(blocks)} blocks"
    return f"{status['id']} {status['status']} {where} jobs {_counts(jobs)}"


def list_table(statuses: list[dict[str, Any]]) -> str:
    """`wf ls`: one line per workflow, plain columns (pipe-friendly)."""
    from services.common.ids import id_time_s

    lines = [f"{'ID':<26}  {'SUBMITTED (UTC)':<19}  {'NAME':<22} {'VERDICT':<9} {'STATUS':<11} JOBS"]
    for status in statuses:
        jobs = [job for block in status["blocks"] for job in block["jobs"]]
        submitted = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(id_time_s(status["id"])))
        flags = " es_stopped" if status.get("was_es_stopped") else ""
        lines.append(
            f"{status['id']:<26}  {submitted:<19}  {status['name'][:22]:<22} {status['verdict']:<9} "
            f"{status['status']:<11} {_counts(jobs)}{flags}"
        )
    return "\n".join(lines)
