"""Plain-text views of a StatusResp for `wf status`."""

from __future__ import annotations

import time
from typing import Any

TERMINAL = ("completed", "failed")


def _tally(blocks: list[dict[str, Any]]) -> dict[str, int]:
    """Jobs by status over these blocks: from their jobs, or from `job_counts` when a StatusResp too
    large for one message lists none (a summary, `jobs_omitted`)."""
    tally: dict[str, int] = {}
    for block in blocks:
        counts = block.get("job_counts") or {}
        if not counts:
            for job in block["jobs"]:
                counts[job["status"]] = counts.get(job["status"], 0) + 1
        for state, n in counts.items():
            tally[state] = tally.get(state, 0) + n
    return tally


def _counts(tally: dict[str, int]) -> str:
    done = sum(tally.get(state, 0) for state in TERMINAL)
    text = f"{done}/{sum(tally.values())} done"
    if tally.get("running"):
        text += f", {tally['running']} running"
    if tally.get("failed"):
        text += f", {tally['failed']} failed"
    return text


def _bar(tally: dict[str, int], width: int = 20) -> str:
    done, total = sum(tally.get(state, 0) for state in TERMINAL), sum(tally.values())
    filled = round(width * done / total) if total else width
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
    if status.get("status") == "paused":
        who = status.get("paused_by") or ""
        lines.append("  paused" + (f" by {who}" if who else "") + ": nothing new is dispatched until `wf resume "
                     f"{status['id']}`; running jobs finish")
    if status.get("approvals_needed") or status.get("approvals"):  # the two-person rule (requireApproval)
        given = status.get("approvals") or []
        who = ", ".join(f"{a['by']} at {a['at']}" + (f" ({a['comment']})" if a.get("comment") else "") for a in given)
        lines.append(f"  approvals: {len(given)} of {status.get('approvals_needed', 0)} needed" + (f": {who}" if who else ""))
    if status.get("jobs_omitted"):
        lines.append("  (too many jobs to list in one message: counts only; each job's events are in WF_EVENTS)")
    for b, block in enumerate(status["blocks"]):
        jobs = block["jobs"]
        tally = _tally([block])
        err = "  has_error" if block["has_error"] else ""
        lines.append(f"  block {b:>2} {_bar(tally)} {block['status']:<11} {_counts(tally):<28} {block['desc']}{err}")
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
    where = f"block {current}/{len(blocks)}" if current is not None else f"{len(blocks)} blocks"
    return f"{status['id']} {status['status']} {where} jobs {_counts(_tally(blocks))}"


def list_table(statuses: list[dict[str, Any]]) -> str:
    """`wf ls`: one line per workflow, plain columns (pipe-friendly)."""
    from services.common.ids import id_time_s

    lines = [f"{'ID':<26}  {'SUBMITTED (UTC)':<19}  {'NAME':<22} {'VERDICT':<9} {'STATUS':<11} JOBS"]
    for status in statuses:
        submitted = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(id_time_s(status["id"])))
        flags = " es_stopped" if status.get("was_es_stopped") else ""
        needed = status.get("approvals_needed") or 0
        given = {a.get("by") for a in status.get("approvals") or [] if a.get("by") != status.get("submitted_by")}
        if needed and status["status"] == "not_started" and status["verdict"] == "approved" and len(given) < needed:
            # what waits for whom: N more approvals, by anyone of the policy's role but the submitter
            flags += (f" awaiting approval {len(given)}/{needed} (not by {status.get('submitted_by') or '?'}"
                      + (f"; given: {', '.join(sorted(g for g in given if g))}" if given else "") + ")")
        lines.append(
            f"{status['id']:<26}  {submitted:<19}  {status['name'][:22]:<22} {status['verdict']:<9} "
            f"{status['status']:<11} {_counts(_tally(status['blocks']))}{flags}"
        )
    return "\n".join(lines)
