"""The status fold: StatusResp from events. Pure; no I/O.

Every state only moves forward (not_started -> running -> completed|failed, pending -> approved|rejected),
and the first terminal state wins, so applying an event twice, or events out of order, changes nothing
that applying them once in order would not."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas import (
    Approval,
    ApprovalStatus,
    Approved,
    BlockEnded,
    BlockStarted,
    BlockStatus,
    CancelRequested,
    Denied,
    Event,
    ExecRequested,
    JobCompleted,
    JobFailed,
    JobStarted,
    JobStatus,
    Paused,
    Rejected,
    Resumed,
    StatusResp,
    Submitted,
    WorkflowEnded,
    WorkflowStarted,
)

_RANK = {"not_started": 0, "running": 1, "paused": 1, "completed": 2, "failed": 2}


def _advance(current: str, new: str) -> str:
    return new if _RANK[new] > _RANK[current] else current


def new_status(ev: Submitted) -> StatusResp:
    """The first StatusResp of a submission whose WorkReq is at hand (services.workreqs.resolved)."""
    assert ev.req is not None
    return StatusResp(
        id=ev.id,
        name=ev.req.name,
        desc=ev.req.desc,
        submitted_by=ev.by,
        blocks=[
            BlockStatus(
                desc=block.desc,
                jobs=[JobStatus(name=job.name, desc=job.desc, args=dict(job.args)) for job in block.jobs],
            )
            for block in ev.req.blocks
        ],
    )


def _job(status: StatusResp, block: int, job: int) -> JobStatus | None:
    if 0 <= block < len(status.blocks) and 0 <= job < len(status.blocks[block].jobs):
        return status.blocks[block].jobs[job]
    return None


def apply(status: StatusResp, ev: Event) -> bool:
    """Apply one event in place; True when the StatusResp changed."""
    before = _fingerprint(status, ev)
    match ev:
        case Approved() | Rejected():
            if status.verdict == "pending":
                status.verdict = "approved" if isinstance(ev, Approved) else "rejected"
                status.reason = ev.reason if isinstance(ev, Rejected) else ""
            if isinstance(ev, Approved):  # even after a denial folded first
                status.approvals_needed = ev.approvals_needed
        # the two-person rule: a denial ends it rejected (whatever the policies said); approvals, one per person
        case Denied() if status.verdict != "rejected":
            status.verdict = "rejected"
            status.reason = f"denied by {ev.by}: {ev.comment}"
        case Approval():
            _apply_approval(status, ev)
        # who: the first to ask is the one recorded (a cancel may be asked more than once)
        case Submitted() if not status.submitted_by:
            status.submitted_by = ev.by
        case ExecRequested() if not status.executed_by:
            status.executed_by = ev.by
        case CancelRequested() if not status.cancelled_by:
            status.cancelled_by = ev.by
        case WorkflowStarted():
            status.status = _advance(status.status, "running")
        case WorkflowEnded():
            status.status = _advance(status.status, ev.status)
            status.had_errors = status.had_errors or ev.had_errors
            status.was_es_stopped = status.was_es_stopped or ev.was_es_stopped
        case BlockStarted() if 0 <= ev.block < len(status.blocks):
            block = status.blocks[ev.block]
            block.status = _advance(block.status, "running")
        case BlockEnded() if 0 <= ev.block < len(status.blocks):
            block = status.blocks[ev.block]
            block.status = _advance(block.status, ev.status)
            block.has_error = block.has_error or ev.has_error
        case JobStarted() | JobCompleted() | JobFailed():
            _apply_job(status, ev)
        # pause and resume: numbered, so the highest of each decides, in whatever order they come
        case Paused() if ev.n > status.pauses:
            status.pauses = ev.n
            if ev.n > status.resumes:
                status.paused_by = ev.by
        case Resumed() if ev.n > status.resumes:
            status.resumes = ev.n
    _pause_view(status)
    return _fingerprint(status, ev) != before


def _pause_view(status: StatusResp) -> None:
    """`paused` (with who paused it) while the workflow runs and its last pause is not resumed;
    `running` again on resume; an ended workflow says how it ended."""
    paused = status.pauses > status.resumes
    if status.status in ("running", "paused"):
        status.status = "paused" if paused else "running"
    if not paused or _RANK[status.status] == 2:
        status.paused_by = ""


def iso_ms(at: float) -> str:
    """Unix seconds as UTC ISO 8601 with milliseconds: 2024-05-01T12:00:00.123Z."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _apply_approval(status: StatusResp, ev: Approval) -> None:
    """One entry per person, their latest approval (a person may approve again once theirs expired)."""
    entry = ApprovalStatus(by=ev.by, at=iso_ms(ev.at), comment=ev.comment)
    for i, given in enumerate(status.approvals):
        if given.by == ev.by:
            if entry.at > given.at:
                status.approvals[i] = entry
            return
    status.approvals.append(entry)
    status.approvals.sort(key=lambda a: a.at)


def _apply_job(status: StatusResp, ev: JobStarted | JobCompleted | JobFailed) -> None:
    job = _job(status, ev.block, ev.job)
    if job is None:
        return
    if isinstance(ev, JobStarted):
        job.status = _advance(job.status, "running")
    elif isinstance(ev, JobCompleted):
        if _RANK[job.status] < 2:
            job.status, job.error, job.output = "completed", "", ev.output
    elif ev.retrying:
        if _RANK[job.status] < 2:  # still going: show why the last attempt failed
            job.status = "running"
            job.error = f"attempt {ev.attempt} failed, retrying: {ev.error}"
            job.output = ev.output
    elif _RANK[job.status] < 2:
        job.status = "failed"
        job.error = ev.error
        job.output = ev.output
        block = status.blocks[ev.block]
        block.has_error = True
        status.had_errors = True


def _fingerprint(status: StatusResp, ev: Event) -> tuple[object, ...]:
    """The parts of the StatusResp one event can touch."""
    head = (status.verdict, status.reason, status.status, status.had_errors, status.was_es_stopped,
            status.submitted_by, status.executed_by, status.cancelled_by, status.approvals_needed,
            status.paused_by, status.pauses, status.resumes,
            tuple((a.by, a.at, a.comment) for a in status.approvals))
    block_idx = getattr(ev, "block", None)
    if block_idx is None or not 0 <= block_idx < len(status.blocks):
        return head
    block = status.blocks[block_idx]
    job = _job(status, block_idx, getattr(ev, "job", -1))
    return (*head, block.status, block.has_error, None if job is None else (job.status, job.error, job.output))
