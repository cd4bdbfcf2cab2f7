"""Running job commands: `started`, the job, then `completed` or `failed`, then the ack.

Delivery is at-least-once: a runner that dies mid-job leaves the command to be redelivered after
the ack wait, and the job runs again (each attempt has its own id, `JobContext.attempt_id`). A
command whose job already has a terminal event (a redelivery after the outcome was stored, or a
command replayed into the work queue) is only acked, not run again, whatever the duplicate
window; one
delivered more than `max_deliveries` times fails with an error that says so, so it never hangs.

A gate's failure (a job with `gate = True`: tokenBucket, validateDecom) is reported `fatal`,
whatever caused it; the executor does not rely on that (it tells gates apart with its own job
registry), but the event then says what the failure does.

A job whose WorkReq says how often it may run (`max_attempts_for`: exec, ssh, http's `attempts`) is
not at-least-once: a command redelivered after an interrupted attempt runs again only while
attempts remain, else it fails "not run again"; before that, the job may clean up what the
interrupted attempt left on this host (`clean_up_earlier_attempts`: exec's processes).

A job's task is cancelled (not just ignored) when its workflow ends early (fatal failure, failure
budget, emergency stop, cancel) or its WorkReq name is emergency-stopped; it is then reported
`failed` with the reason. Commands of such workflows that were not started yet are dropped.

`JobRunner.handle` has the executor's shape: it reads the facts a command is judged by (`_facts`,
the independent reads at once), `verdict()` (verdict.py, pure) decides what to do with it (refuse,
skip, fail without running, run), and only then does the runner act (ack, term, publish, run)."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.kv import KeyValue

from schemas import (
    DECODE_ERRORS,
    ES_CANCELLED,
    JobCommand,
    JobCompleted,
    JobFailed,
    JobStarted,
    WorkflowEnded,
    WorkReq,
    command_decoder,
    event_decoder,
    subjects,
)
from services import workreqs
from services.common.bus import decode_or_terminate, last_event, publish_event, times_delivered
from services.common.topology import RUNNER_ACK_WAIT_S
from services.jobs import Job, JobContext, JobError, JobRegistry, is_gate
from services.jobs.output import NO_SECRETS, Output, Secrets, output_key
from services.safety.stops import STOP, EmergencyStops

from .verdict import Facts, Fail, JobHistory, Refuse, Run, Skip, max_attempts, verdict

log = structlog.get_logger()
KEEPALIVE_S = RUNNER_ACK_WAIT_S / 3
ENDED_MEMORY = 10_000  # ids of recently ended workflows (small)
APPROVED_MEMORY = 256  # verified WorkReqs (large): the workflows this runner is working for

STOP_REASONS = {
    "es": ES_CANCELLED,
    "cancel": "cancelled by request",
    "fatal": "cancelled: a fatal failure ended its block",
    "max_failures": "cancelled: the workflow's failure budget was spent",
}


def _terminal(msg: RawStreamMsg | None) -> bool:
    if msg is None:
        return False
    if (msg.subject or "").endswith(".completed"):
        return True
    ev = event_decoder.decode(msg.data or b"")
    return isinstance(ev, JobFailed) and not ev.retrying


async def job_history(js: JetStreamContext, cmd: JobCommand) -> JobHistory:
    """What the job's events say: whether it has a terminal event (completed, or failed for good:
    not a retried attempt) and whether its last event is `started` (an attempt began, never ended).

    One direct get of the job's last event (a wildcard subject) answers the usual cases: nothing
    yet (a fresh job), or an outcome. Only when that last event is a `started` or a retried
    attempt do the two exact subjects (read at once) decide whether it ended."""
    last = await last_event(js, subjects.job_event(cmd.id, cmd.block, cmd.job, "*"))
    if last is None:
        return JobHistory()
    if _terminal(last):
        return JobHistory(ended=True)
    completed, failed = await asyncio.gather(
        *(last_event(js, subjects.job_event(cmd.id, cmd.block, cmd.job, state)) for state in ("completed", "failed"))
    )
    return JobHistory(ended=_terminal(completed) or _terminal(failed), last_started=(last.subject or "").endswith(".started"))


async def keep_alive(msg: Msg) -> None:
    """In-progress acks, so a long job keeps its command."""
    while True:
        await asyncio.sleep(KEEPALIVE_S)
        try:
            await msg.in_progress()
        except nats.errors.Error as exc:
            log.warning("keepalive_failed", error=repr(exc))


@dataclass
class Running:
    task: asyncio.Task[None]
    workreq: str
    stop_reason: str = ""


class JobRunner:
    def __init__(self, js: JetStreamContext, jobs: JobRegistry, time_scale: float, es: EmergencyStops, max_deliveries: int,
                 *, secrets: Secrets = NO_SECRETS, output_kv: KeyValue | None = None) -> None:
        self.js = js
        self.secrets = secrets
        self.output_kv = output_kv
        self.jobs = jobs
        self.time_scale = time_scale
        self.es = es
        self.max_deliveries = max_deliveries
        self.running: dict[tuple[str, int, int], Running] = {}
        self.ended: OrderedDict[str, str] = OrderedDict()  # recently ended workflows -> why
        self.approved: OrderedDict[str, WorkReq] = OrderedDict()  # verified executing workflows
        self.verifying: dict[str, asyncio.Future[WorkReq | None]] = {}
        es.on_change(self.on_emergency_stop)

    # ------------------------------------------------------------ stopping running jobs

    def _cancel(self, predicate: Callable[[tuple[str, int, int], Running], bool], reason: str) -> None:
        """Cancel the task of every running job the predicate picks (its key, its Running): the job
        is killed (its process group, SSH channel or HTTP request: services/jobs) and `_run`
        reports it failed with `reason`."""
        for key, running in list(self.running.items()):
            # once only: a second cancel (an emergency stop, then its workflow's end) would interrupt
            # the cancelled job's last steps (keeping its output, reporting it failed)
            if predicate(key, running) and not running.stop_reason:
                running.stop_reason = reason
                running.task.cancel()

    def on_emergency_stop(self, workreq: str, state: str) -> None:
        # `pause` cancels nothing: running jobs finish (the executor dispatches nothing new)
        if state == STOP:
            self._cancel(lambda key, r: r.workreq == workreq, STOP_REASONS["es"])

    async def on_workflow_event(self, msg: Msg) -> None:
        try:
            ev = event_decoder.decode(msg.data)
        except DECODE_ERRORS:
            return
        if not isinstance(ev, WorkflowEnded):
            return
        reason = STOP_REASONS.get(ev.stopped_by, f"cancelled: the workflow ended {ev.status}")
        self.ended[ev.id] = reason
        self.approved.pop(ev.id, None)  # its WorkReq is not needed any more
        while len(self.ended) > ENDED_MEMORY:
            self.ended.popitem(last=False)
        self._cancel(lambda key, r: key[0] == ev.id, reason)

    # ------------------------------------------------------------ one command: read, decide, act

    async def handle(self, msg: Msg) -> None:
        """Read the facts (`_facts`), decide (`verdict`, pure: verdict.py), then act on the decision."""
        started = time.perf_counter()
        cmd = await decode_or_terminate(msg, command_decoder)
        if cmd is None:
            return
        attempt = times_delivered(msg)
        structlog.contextvars.bind_contextvars(
            workflow_id=cmd.id, block=cmd.block, job=cmd.job, job_name=cmd.name, attempt=attempt
        )
        job = self.jobs.get(cmd.name)
        decided = verdict(cmd, attempt, await self._facts(cmd), job, self.max_deliveries)
        match decided:
            case Refuse(reason=reason):  # never run it, never retry it; recorded in the log for whoever investigates
                await msg.term()
                log.error("forged_command_refused", reason=reason, subject=msg.subject, outcome="refused")
            case Skip(outcome=outcome):
                await msg.ack()
                log.info("job_handled", outcome=outcome)
            case Fail(outcome=outcome, error=error, fatal=fatal, clean_up=clean_up):
                if clean_up:
                    await self._clean_up(cmd, job)
                await publish_event(self.js, self._failed(cmd, attempt, error, fatal=fatal))
                await msg.term()
                log.info("job_handled", outcome=outcome, error=error)
            case Run(clean_up=clean_up):
                if clean_up:
                    await self._clean_up(cmd, job)
                await self._run_and_report(msg, cmd, job, attempt, started)

    async def _facts(self, cmd: JobCommand) -> Facts:
        """Everything `verdict` judges the command by. The workflow's approved WorkReq (usually known
        already) and the job's events are independent reads: made at once."""
        req = self._known(cmd.id)
        if req is not None:  # known already (every command but a workflow's first few): one read
            history = await job_history(self.js, cmd)
        else:
            req, history = await asyncio.gather(self._verify_once(cmd.id), job_history(self.js, cmd))
        return Facts(req=req, workflow_ended=cmd.id in self.ended,  # (the WorkReq's look-up may have learned it)
                     es_stopped=bool(cmd.workreq) and self.es.is_stopped(cmd.workreq), history=history)

    async def _clean_up(self, cmd: JobCommand, job: Job | None) -> None:
        """An earlier attempt started and never ended (its runner died): what it left running here goes."""
        clean_up: Callable[[str, int, int], Awaitable[int]] | None = getattr(job, "clean_up_earlier_attempts", None)
        if clean_up is None:  # (verdict asks for it only of a job that has it)
            return
        killed = await clean_up(cmd.id, cmd.block, cmd.job)
        if killed:
            log.warning("earlier_attempt_killed", processes=killed)

    async def _run_and_report(self, msg: Msg, cmd: JobCommand, job: Job | None, attempt: int, started: float) -> None:
        """`started`, the job, then its outcome; then the ack, or a nak that retries it after a backoff."""
        await publish_event(self.js, JobStarted(id=cmd.id, block=cmd.block, job=cmd.job, attempt=attempt, at=time.time()))
        result = await self._run(msg, cmd, job, attempt)
        if isinstance(result, JobFailed) and result.retrying:
            delay_s = getattr(job, "retry_base_s", 1.0) * 2 ** (attempt - 1)
            await publish_event(self.js, result)
            await msg.nak(delay=delay_s)
            log.info("job_handled", outcome="retrying", error=result.error, retry_in_s=delay_s)
            return
        await publish_event(self.js, result)
        await msg.ack()
        log.info(
            "job_handled",
            outcome="completed" if isinstance(result, JobCompleted) else "failed",
            error=getattr(result, "error", ""),  # (redacted: _failed)
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    # ------------------------------------------------------------ the approved WorkReq (defence in depth)

    def _known(self, wf_id: str) -> WorkReq | None:
        """The approved WorkReq of the executing workflow with this id, if looked up already (kept as
        the most recently used): only what it says, at that place, is run (`verdict.refusal`)."""
        req = self.approved.get(wf_id)
        if req is not None:
            self.approved.move_to_end(wf_id)
        return req

    async def _verify_once(self, wf_id: str) -> WorkReq | None:
        """One look-up per workflow, however many of its commands arrive at once (a big block
        brings hundreds together, and each look-up fetches and decodes the whole WorkReq)."""
        pending = self.verifying.get(wf_id)
        if pending is None:
            pending = asyncio.ensure_future(self._approved_workreq(wf_id))
            self.verifying[wf_id] = pending
            pending.add_done_callback(lambda _: self.verifying.pop(wf_id, None))
        req = await asyncio.shield(pending)  # a cancelled job must not cancel the others' look-up
        if req is not None:
            self.approved[wf_id] = req
            self.approved.move_to_end(wf_id)
            while len(self.approved) > APPROVED_MEMORY:
                self.approved.popitem(last=False)
        return req

    async def _approved_workreq(self, wf_id: str) -> WorkReq | None:
        for kind in ("approved", "exec_requested"):
            if await last_event(self.js, subjects.event(wf_id, kind)) is None:
                return None
        for state in ("completed", "failed"):  # ended before this runner heard of it: its commands are dropped
            msg = await last_event(self.js, subjects.workflow_state(wf_id, state))
            if msg is not None:
                ended = event_decoder.decode(msg.data or b"")
                self.ended[wf_id] = STOP_REASONS.get(getattr(ended, "stopped_by", ""), f"the workflow ended {state}")
        try:
            sub = await workreqs.submitted(self.js, wf_id)
            return sub.req if sub is not None else None
        except workreqs.StoredReqMissing:
            log.error("stored_workreq_missing", workflow_id=wf_id)
            return None

    # ------------------------------------------------------------ running the job

    def _failed(self, cmd: JobCommand, attempt: int, error: str, *, fatal: bool = False, retrying: bool = False,
                output: str = "") -> JobFailed:
        """The one place a failure is made: a gate's failure for good is always fatal; the error is
        redacted (a job's message may quote what it was given)."""
        job = self.jobs.get(cmd.name)
        fatal = fatal or job is None or (is_gate(job) and not retrying)
        return JobFailed(id=cmd.id, block=cmd.block, job=cmd.job, attempt=attempt, at=time.time(),
                         error=self.secrets.redact(error), fatal=fatal, retrying=retrying, output=output)

    async def _keep_output(self, cmd: JobCommand, output: Output, attempt: int) -> str:
        """Store what was kept of the output for `wf logs` (before the terminal event, so whoever sees
        the outcome can read it), and return its tail for the event. Losing the whole output (the
        bucket full or unreachable) costs a warning, never the job. A later attempt that printed
        nothing replaces an earlier attempt's output (with nothing)."""
        if not output.total and attempt == 1:
            return ""
        if self.output_kv is not None:
            try:
                await self.output_kv.put(output_key(cmd.id, cmd.block, cmd.job), output.full().encode())
            except (nats.errors.Error, OSError) as exc:
                log.warning("output_not_kept", error=repr(exc), bytes=output.total)
        return output.tail()

    async def _run(self, msg: Msg, cmd: JobCommand, job: Job | None, attempt: int) -> JobCompleted | JobFailed:
        if job is None:
            return self._failed(cmd, attempt, f"unknown job {cmd.name!r}", fatal=True)
        key = (cmd.id, cmd.block, cmd.job)
        task = asyncio.current_task()
        assert task is not None
        self.running[key] = Running(task, cmd.workreq)
        output = Output(self.secrets)
        ctx = JobContext(workflow_id=cmd.id, block=cmd.block, job=cmd.job, attempt=attempt, time_scale=self.time_scale,
                         log=log, output=output, secrets=self.secrets)
        keepalive = asyncio.create_task(keep_alive(msg))
        # the outcome, made once the output is kept: that await comes after the job left `running`,
        # so a stop arriving then cannot cancel it (and lose the outcome)
        outcome: Callable[..., JobCompleted | JobFailed]
        try:
            await job.run(cmd.args, ctx)
            outcome = partial(JobCompleted, id=cmd.id, block=cmd.block, job=cmd.job, attempt=attempt, at=time.time())
        except asyncio.CancelledError:
            reason = self.running[key].stop_reason
            if not reason:
                raise  # shutting down: the caller hands the command back
            task.uncancel()
            log.info("job_cancelled", reason=reason)
            outcome = partial(self._failed, cmd, attempt, reason)
        except JobError as err:
            retrying = err.retryable and attempt < max_attempts(job, cmd.args)
            outcome = partial(self._failed, cmd, attempt, err.message, fatal=err.fatal, retrying=retrying)
        except Exception as exc:  # a job's own bug fails the job, never the runner
            log.error("job_crashed", error=self.secrets.redact(repr(exc)),
                      traceback=self.secrets.redact(traceback.format_exc()))
            outcome = partial(self._failed, cmd, attempt, f"job crashed: {exc!r}")
        finally:
            keepalive.cancel()
            self.running.pop(key, None)
        return outcome(output=await self._keep_output(cmd, output, attempt))
