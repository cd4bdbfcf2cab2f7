"""What the job runner does with a command: decided from facts alone, pure, no I/O, so unit tests
call it directly (tests/unit/test_runner_verdict.py).

The runner (runner.py, `JobRunner.handle`) reads the facts a command is judged by (`Facts`: the
workflow's approved WorkReq, whether this runner knows the workflow ended, its name's emergency
stop, what the job's own events say), `verdict()` decides, and the runner acts on the decision.
The rules, in the order they apply:

1. `Refuse`: the command is not what an approved, executing workflow's WorkReq says at that place
   (defence in depth against forged commands): terminated, never run, never retried.
2. `Skip`: its workflow ended (as far as this runner knows), its WorkReq name is emergency-stopped
   (`stop`; under `pause` a queued command still runs), or the job already has a terminal event (a
   redelivery after the outcome was stored, or a replay): acked, not run.
3. `Fail` "gave up": delivered more often than `max_deliveries` (or the job's own attempts, if
   more) allow: each runner that took it died; it fails rather than hang.
4. `Fail` "not run again": a job whose WorkReq says how often it may run (`max_attempts_for`:
   exec, ssh, http's `attempts`) whose interrupted attempts used them up.
5. `Run`: everything else.

`clean_up` (on `Fail` "not run again" and `Run`): an earlier attempt started and never ended (its
runner died) and the job can clean up what that attempt left on this host
(`clean_up_earlier_attempts`: exec's processes); the runner does so first."""

from __future__ import annotations

from dataclasses import dataclass

from schemas import JobCommand, WorkReq
from services.jobs import Job


@dataclass(frozen=True)
class JobHistory:
    """What the job's own events say."""

    ended: bool = False  # a terminal event: completed, or failed for good (not a retried attempt)
    last_started: bool = False  # its last event is `started`: an attempt began and never ended


@dataclass(frozen=True)
class Facts:
    """Everything a command is judged by, read by the runner before it decides."""

    req: WorkReq | None  # the approved WorkReq of the executing workflow with the command's id (None: none)
    workflow_ended: bool  # this runner knows the workflow ended (its commands are dropped)
    es_stopped: bool  # the command's WorkReq name is emergency-stopped (`stop`)
    history: JobHistory


@dataclass(frozen=True)
class Refuse:
    """Terminate the command, run nothing, log `forged_command_refused`."""

    reason: str


@dataclass(frozen=True)
class Skip:
    """Ack the command without running it; `outcome` is what the log says."""

    outcome: str  # skipped_workflow_ended | skipped_emergency_stop | already_ended


@dataclass(frozen=True)
class Fail:
    """Report the job failed (without running it), then terminate the command."""

    outcome: str  # delivery_limit | attempts_spent
    error: str
    fatal: bool = False  # asked for; a gate's or an unknown job's failure is fatal anyway (JobRunner._failed)
    clean_up: bool = False  # first clean up what an interrupted earlier attempt left


@dataclass(frozen=True)
class Run:
    """Run the job: `started`, the job, `completed` or `failed`, then ack (or nak to retry)."""

    clean_up: bool = False  # first clean up what an interrupted earlier attempt left


Verdict = Refuse | Skip | Fail | Run


def max_attempts(job: Job | None, args: dict[str, str]) -> int:
    """How many attempts a job may have: its `max_attempts_for(args)` (a WorkReq's `attempts` arg),
    else its class's `max_attempts` (default 1: no retry)."""
    per_args = getattr(job, "max_attempts_for", None)
    if per_args is not None:
        try:
            return max(1, int(per_args(args)))
        except Exception:  # validated at submit; a job's own bug here means no retry
            return 1
    return int(getattr(job, "max_attempts", 1))


def refusal(cmd: JobCommand, req: WorkReq | None) -> str:
    """Why the command is not what the approved WorkReq says at that place ("": it is)."""
    if req is None:
        return "no approved, executing workflow has this id"
    if not (0 <= cmd.block < len(req.blocks) and 0 <= cmd.job < len(req.blocks[cmd.block].jobs)):
        return "no such block and job in the approved WorkReq"
    job = req.blocks[cmd.block].jobs[cmd.job]
    if (job.name, job.args, req.name) != (cmd.name, cmd.args, cmd.workreq):
        return "the job, its args or the WorkReq name differ from the approved WorkReq"
    return ""


def verdict(cmd: JobCommand, attempt: int, facts: Facts, job: Job | None, max_deliveries: int) -> Verdict:
    """What to do with the command on its `attempt`th delivery. `job`: the registry's job of that
    name (None: unknown, which `Run` reports as a fatal failure)."""
    refused = refusal(cmd, facts.req)
    if refused:
        return Refuse(refused)
    if facts.workflow_ended:
        return Skip("skipped_workflow_ended")
    if facts.es_stopped:
        # (under `pause` a command already queued runs: the executor sent it before the pause,
        # and dropping it would leave its job in flight for ever)
        return Skip("skipped_emergency_stop")
    if facts.history.ended:  # a redelivery after the outcome was stored, or a replay
        return Skip("already_ended")
    allowed = max_attempts(job, cmd.args)
    limit = max(max_deliveries, allowed)
    if attempt > limit:
        return Fail("delivery_limit",
                    f"gave up after {attempt - 1} deliveries: each runner that took it died or lost its connection "
                    f"before finishing (limit {limit})")
    clean_up = (attempt > 1 and getattr(job, "clean_up_earlier_attempts", None) is not None
                and facts.history.last_started)
    if getattr(job, "max_attempts_for", None) is not None and attempt > allowed:
        # a job whose WorkReq says how often it may run (`attempts`: exec, ssh, http) is not run
        # again because an earlier attempt was interrupted (its runner stopped or died mid-run):
        # the command may have done its work; at-least-once is the seed jobs' rule, not theirs
        return Fail("attempts_spent",
                    f"not run again: attempt {attempt - 1} was interrupted (its runner stopped or died) and this "
                    f"job may run {allowed} time(s) (its `attempts`)",
                    fatal=cmd.args.get("fatal") == "true", clean_up=clean_up)
    return Run(clean_up=clean_up)
