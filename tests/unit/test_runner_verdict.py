"""The job runner's verdict on a command (services/jobrunner/verdict.py): every rule, and which wins."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from schemas import Block, JobCommand, WorkReq
from schemas import Job as JobSpec
from services.jobrunner.verdict import (
    Facts,
    Fail,
    JobHistory,
    Refuse,
    Run,
    Skip,
    max_attempts,
    refusal,
    verdict,
)
from services.jobs import Job, JobContext

MAX_DELIVERIES = 5


class Plain:
    """A seed-like job: at-least-once, retried up to its class's `max_attempts`."""

    name = "plain"
    max_attempts = 3

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None: ...


class Counted:
    """An exec-like job: its WorkReq says how often it may run, and it cleans up an interrupted attempt."""

    name = "counted"
    max_attempts = 20

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None: ...

    def max_attempts_for(self, args: Mapping[str, str]) -> int:
        return int(args.get("attempts", "1"))

    async def clean_up_earlier_attempts(self, workflow_id: str, block: int, job: int) -> int:
        return 0


class Broken(Counted):
    name = "broken"

    def max_attempts_for(self, args: Mapping[str, str]) -> int:
        raise ValueError("a job's own bug")


class CleansUpOnly(Plain):
    name = "cleansUpOnly"

    async def clean_up_earlier_attempts(self, workflow_id: str, block: int, job: int) -> int:
        return 0


REQ = WorkReq(name="Demo", blocks=[
    Block(jobs=[JobSpec(name="plain", args={"seconds": "1"}), JobSpec(name="counted", args={"attempts": "2"})]),
    Block(jobs=[JobSpec(name="counted", args={"fatal": "true"}), JobSpec(name="noSuchJob"),
                JobSpec(name="broken"), JobSpec(name="cleansUpOnly")]),
])
JOBS: dict[str, Job] = {"plain": Plain(), "counted": Counted(), "broken": Broken(), "cleansUpOnly": CleansUpOnly()}


def cmd(block: int = 0, job: int = 0, **changes: object) -> JobCommand:
    """The command the approved REQ says at (block, job), with `changes`."""
    spec = REQ.blocks[block].jobs[job] if 0 <= block < len(REQ.blocks) and 0 <= job < len(REQ.blocks[block].jobs) \
        else JobSpec(name="plain", args={"seconds": "1"})
    fields: dict[str, object] = {"id": "01J0000000000000000000000A", "block": block, "job": job, "name": spec.name,
                                 "args": dict(spec.args), "at": 1.0, "workreq": REQ.name, **changes}
    return JobCommand(**fields)  # type: ignore[arg-type]


def facts(req: WorkReq | None = REQ, *, workflow_ended: bool = False, es_stopped: bool = False,
          ended: bool = False, last_started: bool = False) -> Facts:
    return Facts(req=req, workflow_ended=workflow_ended, es_stopped=es_stopped,
                 history=JobHistory(ended=ended, last_started=last_started))


def judge(command: JobCommand, attempt: int = 1, known: Facts | None = None) -> object:
    return verdict(command, attempt, known or facts(), JOBS.get(command.name), MAX_DELIVERIES)


# ------------------------------------------------------------ 1. refused: not what the approved WorkReq says


@pytest.mark.parametrize(("command", "known", "reason"), [
    (cmd(), facts(None), "no approved, executing workflow has this id"),
    (cmd(block=2), facts(), "no such block and job in the approved WorkReq"),
    (cmd(block=-1), facts(), "no such block and job in the approved WorkReq"),
    (cmd(block=0, job=2), facts(), "no such block and job in the approved WorkReq"),
    (cmd(block=0, job=-1), facts(), "no such block and job in the approved WorkReq"),
    (cmd(name="counted"), facts(), "the job, its args or the WorkReq name differ from the approved WorkReq"),
    (cmd(args={"seconds": "2"}), facts(), "the job, its args or the WorkReq name differ from the approved WorkReq"),
    (cmd(args={}), facts(), "the job, its args or the WorkReq name differ from the approved WorkReq"),
    (cmd(workreq="Other"), facts(), "the job, its args or the WorkReq name differ from the approved WorkReq"),
    (cmd(workreq=""), facts(), "the job, its args or the WorkReq name differ from the approved WorkReq"),
])
def test_a_command_the_approved_workreq_does_not_say_is_refused(command: JobCommand, known: Facts, reason: str) -> None:
    assert refusal(command, known.req) == reason
    assert judge(command, known=known) == Refuse(reason)


def test_refusal_wins_over_every_other_rule() -> None:
    everything = facts(None, workflow_ended=True, es_stopped=True, ended=True, last_started=True)
    assert judge(cmd(), attempt=99, known=everything) == Refuse("no approved, executing workflow has this id")


def test_a_command_that_matches_is_not_refused() -> None:
    assert refusal(cmd(), REQ) == ""
    assert refusal(cmd(block=1, job=3), REQ) == ""


# ------------------------------------------------------------ 2. skipped: acked, not run


def test_a_command_of_an_ended_workflow_is_skipped_before_anything_else() -> None:
    known = facts(workflow_ended=True, es_stopped=True, ended=True)
    assert judge(cmd(), attempt=99, known=known) == Skip("skipped_workflow_ended")


def test_a_command_of_an_emergency_stopped_name_is_skipped() -> None:
    assert judge(cmd(), attempt=99, known=facts(es_stopped=True, ended=True)) == Skip("skipped_emergency_stop")


def test_a_job_with_a_terminal_event_is_skipped_not_run_again() -> None:
    assert judge(cmd(), known=facts(ended=True)) == Skip("already_ended")
    # whatever its deliveries or attempts: the outcome is stored
    assert judge(cmd(), attempt=99, known=facts(ended=True, last_started=True)) == Skip("already_ended")
    assert judge(cmd(0, 1), attempt=9, known=facts(ended=True)) == Skip("already_ended")


# ------------------------------------------------------------ 3. delivered too often: fails, never hangs


def test_a_command_delivered_more_than_max_deliveries_fails_saying_so() -> None:
    unknown = cmd(1, 1)  # (an unknown job's limit is max_deliveries)
    assert judge(unknown, attempt=MAX_DELIVERIES) == Run()
    assert judge(unknown, attempt=MAX_DELIVERIES + 1) == Fail(
        "delivery_limit",
        "gave up after 5 deliveries: each runner that took it died or lost its connection before finishing (limit 5)",
    )


def test_the_delivery_limit_is_the_larger_of_max_deliveries_and_the_jobs_attempts() -> None:
    counted = cmd(0, 1, args={"attempts": "20"})  # (refusal is about the WorkReq: give it one that says so)
    req = WorkReq(name="Demo", blocks=[Block(jobs=[REQ.blocks[0].jobs[0], JobSpec(name="counted", args={"attempts": "20"})])])
    assert judge(counted, attempt=20, known=facts(req)) == Run()
    got = judge(counted, attempt=21, known=facts(req, last_started=True))
    assert isinstance(got, Fail) and got.outcome == "delivery_limit"
    assert got.error.startswith("gave up after 20 deliveries") and got.error.endswith("(limit 20)")
    assert not got.fatal and not got.clean_up  # no clean-up: it gives up, whatever was left


def test_a_plain_jobs_own_max_attempts_does_not_lower_the_delivery_limit() -> None:
    # Plain.max_attempts is 3 (retries); an interrupted attempt of it runs again up to max_deliveries
    assert judge(cmd(), attempt=4) == Run()
    assert judge(cmd(), attempt=MAX_DELIVERIES) == Run()
    got = judge(cmd(), attempt=MAX_DELIVERIES + 1)
    assert isinstance(got, Fail) and got.outcome == "delivery_limit"


# ------------------------------------------------------------ 4. a job that may run N times: "not run again"


def test_a_counted_job_whose_interrupted_attempts_used_its_attempts_fails_not_run_again() -> None:
    counted = cmd(0, 1)  # attempts 2
    assert judge(counted, attempt=2) == Run()
    assert judge(counted, attempt=3) == Fail(
        "attempts_spent",
        "not run again: attempt 2 was interrupted (its runner stopped or died) and this job may run 2 time(s) "
        "(its `attempts`)",
    )


def test_not_run_again_is_fatal_when_its_args_say_so_and_cleans_up_first() -> None:
    fatal_one = cmd(1, 0)  # counted, {"fatal": "true"}: attempts 1
    got = judge(fatal_one, attempt=2, known=facts(last_started=True))
    assert got == Fail("attempts_spent",
                       "not run again: attempt 1 was interrupted (its runner stopped or died) and this job may run "
                       "1 time(s) (its `attempts`)", fatal=True, clean_up=True)
    # the earlier attempt ended (a failure reported): nothing to clean up
    got = judge(fatal_one, attempt=2, known=facts(last_started=False))
    assert isinstance(got, Fail) and got.fatal and not got.clean_up


def test_a_job_whose_max_attempts_for_crashes_may_run_once() -> None:
    broken = cmd(1, 2)
    assert judge(broken) == Run()
    got = judge(broken, attempt=2)
    assert isinstance(got, Fail) and got.outcome == "attempts_spent" and "may run 1 time(s)" in got.error
    assert not got.fatal


# ------------------------------------------------------------ 5. run, cleaning up an interrupted attempt first


@pytest.mark.parametrize(("command", "attempt", "last_started", "clean_up"), [
    (cmd(0, 1), 2, True, True),  # a redelivery after a runner died mid-attempt: clean up first
    (cmd(0, 1), 1, True, False),  # the first delivery has no earlier attempt (whatever the events say)
    (cmd(0, 1), 2, False, False),  # the earlier attempt ended (it failed and is retried): nothing left
    (cmd(1, 3), 2, True, True),  # any job with clean_up_earlier_attempts, counted or not
    (cmd(), 2, True, False),  # a job without clean_up_earlier_attempts
    (cmd(1, 1), 2, True, False),  # an unknown job (Run reports it failed, fatally)
])
def test_run_and_whether_to_clean_up_first(command: JobCommand, attempt: int, last_started: bool,
                                           clean_up: bool) -> None:
    assert judge(command, attempt, facts(last_started=last_started)) == Run(clean_up=clean_up)


def test_a_fresh_command_runs() -> None:
    for block, spec_jobs in enumerate(REQ.blocks):
        for job in range(len(spec_jobs.jobs)):
            assert judge(cmd(block, job)) == Run()


# ------------------------------------------------------------ max_attempts


def test_max_attempts_per_args_else_the_class_else_one() -> None:
    assert max_attempts(Counted(), {"attempts": "4"}) == 4
    assert max_attempts(Counted(), {"attempts": "0"}) == 1  # never below one
    assert max_attempts(Broken(), {}) == 1
    assert max_attempts(Plain(), {}) == 3
    assert max_attempts(None, {}) == 1

    class Bare:
        name = "bare"

    assert max_attempts(Bare(), {}) == 1  # type: ignore[arg-type]
