"""A workflow's progress and what to emit next: pure, no I/O, so unit tests call it directly.

The executor rebuilds this from the workflow's events (its own included) after any restart, so it
holds nothing that is not derived from WF_EVENTS, except which commands are still waiting in the
WF_JOBS work queue (`mark_dispatched`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from schemas import (
    BlockEnded,
    BlockStarted,
    CancelRequested,
    Event,
    JobCompleted,
    JobFailed,
    JobStarted,
    WorkflowEnded,
    WorkflowStarted,
    WorkReq,
)

TERMINAL = ("completed", "failed")


@dataclass
class JobProgress:
    dispatched: bool = False
    status: str = "not_started"
    fatal: bool = False

    @property
    def in_flight(self) -> bool:
        return self.dispatched and self.status not in TERMINAL


@dataclass
class Decision:
    events: list[Event] = field(default_factory=list)
    dispatch: list[tuple[int, int]] = field(default_factory=list)  # (block, job)

    def __bool__(self) -> bool:
        return bool(self.events or self.dispatch)


class WorkflowProgress:
    def __init__(self, wf_id: str, req: WorkReq) -> None:
        self.id = wf_id
        self.req = req
        self.started = False
        self.ended = False
        self.stopped_by = ""  # "es" or "cancel" once a stop was requested
        self.blocks_started: set[int] = set()
        self.blocks_ended: dict[int, str] = {}
        self.jobs = [[JobProgress() for _ in block.jobs] for block in req.blocks]

    # ------------------------------------------------------------ what happened

    def stop(self, reason: str) -> None:
        """An emergency stop ("es") or a cancel ("cancel"): nothing more is dispatched."""
        if not self.ended and not self.stopped_by:
            self.stopped_by = reason

    def apply(self, ev: Event) -> None:
        """Record an event; idempotent, and a job's first terminal state wins."""
        match ev:
            case CancelRequested():
                self.stop("cancel")
            case WorkflowStarted():
                self.started = True
            case WorkflowEnded():
                self.ended = True
            case BlockStarted():
                self.blocks_started.add(ev.block)
            case BlockEnded():
                self.blocks_ended.setdefault(ev.block, ev.status)
            case JobStarted() | JobCompleted() | JobFailed():
                job = self._job(ev.block, ev.job)
                if job is None:
                    return
                job.dispatched = True
                if job.status in TERMINAL:
                    return
                if isinstance(ev, JobStarted) or (isinstance(ev, JobFailed) and ev.retrying):
                    job.status = "running"
                elif isinstance(ev, JobCompleted):
                    job.status = "completed"
                else:
                    job.status, job.fatal = "failed", ev.fatal

    def mark_dispatched(self, block: int, job: int) -> None:
        found = self._job(block, job)
        if found is not None:
            found.dispatched = True

    def _job(self, block: int, job: int) -> JobProgress | None:
        if 0 <= block < len(self.jobs) and 0 <= job < len(self.jobs[block]):
            return self.jobs[block][job]
        return None

    @property
    def failures(self) -> int:
        return sum(job.status == "failed" for block in self.jobs for job in block)

    @property
    def over_failure_budget(self) -> bool:
        return self.req.max_failures is not None and self.failures > self.req.max_failures

    # ------------------------------------------------------------ what to do next

    def halt_reason(self, block: int) -> str:
        """Why nothing more may be dispatched in this block, or "" to go on."""
        if self.stopped_by:
            return self.stopped_by
        if any(job.fatal for job in self.jobs[block]):
            return "fatal"
        if self.over_failure_budget:
            return "max_failures"
        return ""

    def decide(self, now: float | None = None) -> Decision:
        """The events and job commands to emit now; applying them is the caller's job.

        A fatal failure, a spent failure budget, an emergency stop or a cancel ends the block and
        the workflow at once: nothing more is dispatched, no later block starts, and the jobs still
        running are the runners' to cancel when they see the workflow end."""
        at = time.time() if now is None else now
        out = Decision()
        if self.ended:
            return out
        if not self.started:
            out.events.append(WorkflowStarted(id=self.id, at=at))
        halted = ""
        for b, jobs in enumerate(self.jobs):
            if b in self.blocks_ended:
                continue
            halted = self.halt_reason(b)
            if halted and b not in self.blocks_started:
                break  # stopped between blocks: the next block never starts
            if b not in self.blocks_started:
                out.events.append(BlockStarted(id=self.id, at=at, block=b))
            has_error = any(job.status == "failed" for job in jobs)
            if halted:
                finished = all(job.status in TERMINAL for job in jobs)
                status = "completed" if finished and not has_error else "failed"
                out.events.append(BlockEnded(id=self.id, at=at, block=b, status=status, has_error=has_error))
                break
            in_flight = sum(job.in_flight for job in jobs)
            limit = self.req.blocks[b].effective_rate_limit
            for j, job in enumerate(jobs):
                if in_flight >= limit:
                    break
                if not job.dispatched:
                    out.dispatch.append((b, j))
                    in_flight += 1
            if in_flight or not all(job.dispatched for job in jobs):
                return out  # the block is still running
            out.events.append(
                BlockEnded(id=self.id, at=at, block=b, status="failed" if has_error else "completed", has_error=has_error)
            )
        had_errors = self.failures > 0
        out.events.append(
            WorkflowEnded(
                id=self.id,
                at=at,
                status="failed" if had_errors or halted else "completed",
                had_errors=had_errors,
                was_es_stopped=halted == "es",
                stopped_by=halted,
            )
        )
        return out

    def commit(self, decision: Decision) -> None:
        """Record a decision once its events and commands are stored."""
        for ev in decision.events:
            self.apply(ev)
        for block, job in decision.dispatch:
            self.mark_dispatched(block, job)
