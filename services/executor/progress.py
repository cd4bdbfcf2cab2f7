"""A workflow's progress and what to emit next: pure, no I/O, so unit tests call it directly.

The executor rebuilds this from the workflow's events (its own included) after any restart, so it
holds nothing that is not derived from WF_EVENTS, except which commands are still waiting in the
WF_JOBS work queue (`mark_dispatched`).

Gates (jobs that guard what follows them: `tokenBucket`, `validateDecom`, any plugin job with
`gate = True`) are told apart here, from the executor's own job registry (`is_gate`), never from
the failure event: whatever a gate's failure says (fatal or not, a crash, a timeout, retries or
deliveries exhausted, a runner's own report), it ends the workflow as a fatal failure would, and no
failure budget lets it through. Inside a block nothing after a gate is dispatched until the gate
has completed, so nothing it guards runs before or without it.

Fair shares of the runners: besides its block's `rate_limit`, a workflow never has more than
`max_in_flight` jobs dispatched and not ended (WF_MAX_JOBS_IN_FLIGHT_PER_WORKFLOW, half of one
runner's slots by default). A workflow of many long jobs therefore never holds every runner slot,
nor fills the FIFO work queue ahead of a workflow started after it: that one's commands find slots
free and run at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from schemas import (
    ES_CANCELLED,
    BlockEnded,
    BlockStarted,
    CancelRequested,
    Event,
    JobCompleted,
    JobFailed,
    JobStarted,
    Paused,
    Resumed,
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
    gate: bool = False  # a gate: any failure of it is fatal; nothing after it in its block runs before it completed

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
    def __init__(
        self, wf_id: str, req: WorkReq, is_gate: Callable[[str], bool], max_in_flight: int | None = None,
    ) -> None:
        """`is_gate(job name)`: from the executor's job registry (`JobRegistry.gate_predicate`).
        `max_in_flight`: the most jobs in flight for the whole workflow, whatever a block's
        `rate_limit` allows (None: the rate limit alone)."""
        self.id = wf_id
        self.req = req
        self.max_in_flight = max_in_flight
        self.started = False
        self.ended = False
        self.stopped_by = ""  # "es" or "cancel" once a stop was requested
        self.fatal_failure = False  # a fatal failure (or any failure of a gate) happened: the workflow ends
        self.pauses = 0  # the highest `n` of its `paused` events
        self.resumes = 0  # the highest `n` of its `resumed` events
        self.es_paused = False  # its name's emergency stop says `pause` (the executor follows wf_es)
        self.blocks_started: set[int] = set()
        self.blocks_ended: dict[int, str] = {}
        gates = {name: bool(is_gate(name)) for name in {job.name for block in req.blocks for job in block.jobs}}
        self.jobs = [[JobProgress(gate=gates[job.name]) for job in block.jobs] for block in req.blocks]

    # ------------------------------------------------------------ what happened

    def stop(self, reason: str) -> None:
        """An emergency stop ("es") or a cancel ("cancel"): nothing more is dispatched."""
        if not self.ended and not self.stopped_by:
            self.stopped_by = reason

    @property
    def paused(self) -> bool:
        """Nothing new may be dispatched (by request, or by its name's emergency stop)."""
        return self.pauses > self.resumes or self.es_paused

    def apply(self, ev: Event) -> None:
        """Record an event; idempotent, and a job's first terminal state wins."""
        match ev:
            case CancelRequested():
                self.stop("cancel")
            case Paused():
                self.pauses = max(self.pauses, ev.n)
            case Resumed():
                self.resumes = max(self.resumes, ev.n)
            case WorkflowStarted():
                self.started = True
            case WorkflowEnded():
                self.ended = True
            case BlockStarted():
                self.blocks_started.add(ev.block)
            case BlockEnded():
                self.blocks_ended.setdefault(ev.block, ev.status)
            case JobStarted() | JobCompleted() | JobFailed():
                if isinstance(ev, JobFailed) and ev.error == ES_CANCELLED:
                    # a runner saw the name stopped before this executor did (each follows wf_es on
                    # its own; after a purge each notices at its own check): the same stop, now
                    self.stop("es")
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
                    job.status, job.fatal = "failed", ev.fatal or job.gate
                    self.fatal_failure = self.fatal_failure or job.fatal

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
        """Why nothing more may be dispatched in this block, or "" to go on. A fatal failure counts
        wherever it happened: an executor that took over after its block's `ended` event was stored
        but before the workflow's must not start the next block."""
        if self.stopped_by:
            return self.stopped_by
        if self.fatal_failure:
            return "fatal"
        if self.over_failure_budget:
            return "max_failures"
        return ""

    def decide(self, now: float | None = None) -> Decision:
        """The events and job commands to emit now; applying them is the caller's job.

        A fatal failure (any failure of a gate is one), a spent failure budget, an emergency stop or
        a cancel ends the block and the workflow at once: nothing more is dispatched, no later block
        starts, and the jobs still running are the runners' to cancel when they see the workflow
        end. Inside a block, commands go out in job order up to the rate limit, and none after a
        gate that has not completed; never more in flight than the rate limit, nor than the
        workflow's share of the runners (`max_in_flight`)."""
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
                if self.paused:
                    return out  # paused between blocks: the next one starts on resume
                out.events.append(BlockStarted(id=self.id, at=at, block=b))
            has_error = any(job.status == "failed" for job in jobs)
            if halted:
                finished = all(job.status in TERMINAL for job in jobs)
                status: Literal["completed", "failed"] = "completed" if finished and not has_error else "failed"
                out.events.append(BlockEnded(id=self.id, at=at, block=b, status=status, has_error=has_error))
                break
            # the block's `rate_limit` is no rate: the most of its jobs in flight at once (dispatched,
            # not ended), within the workflow's share of the runners' slots (max_in_flight)
            in_flight = sum(job.in_flight for job in jobs)
            limit = self.req.blocks[b].jobs_in_flight_cap
            if self.max_in_flight is not None:
                limit = min(limit, max(1, self.max_in_flight))
            for j, job in enumerate(jobs):
                if in_flight >= limit or self.paused:
                    break
                if not job.dispatched:
                    out.dispatch.append((b, j))
                    in_flight += 1
                if job.gate and job.status != "completed":
                    break  # what the gate guards waits for it
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
