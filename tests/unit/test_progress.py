"""The executor's decisions: rate limits, Block order, the seed's failure semantics, gates, resume."""

import json

import pytest

from schemas import (
    BlockEnded,
    BlockStarted,
    CancelRequested,
    JobCompleted,
    JobFailed,
    JobStarted,
    WorkflowEnded,
    WorkflowStarted,
    workreq_decoder,
)
from services.executor.progress import WorkflowProgress
from services.jobs import JobRegistry

GATES = {"tokenBucket", "validateDecom"}


def not_a_gate(name):
    return False


def make(blocks, max_failures=None, is_gate=not_a_gate):
    """blocks: list of (rate_limit, number_of_jobs), or (rate_limit, [job name, ...])."""
    def jobs(spec):
        names = ["sleep"] * spec if isinstance(spec, int) else spec
        return [{"name": name, "args": {}} for name in names]

    body = {
        "name": "N",
        "max_failures": max_failures,
        "blocks": [{"rate_limit": r, "jobs": jobs(spec)} for r, spec in blocks],
    }
    return WorkflowProgress("W", workreq_decoder.decode(json.dumps(body).encode()), is_gate)


def erase(max_failures=None, check_rate=1):
    """The satellite erase's shape: validateDecom and tokenBucket, then blocks of diskErase."""
    return make([(check_rate, ["validateDecom", "tokenBucket"]), (5, ["diskErase"] * 5), (5, ["diskErase"] * 5)],
                max_failures=max_failures, is_gate=GATES.__contains__)


def step(p):
    d = p.decide(now=0.0)
    p.commit(d)
    return d


def finish(p, block, job, ok=True, fatal=False):
    p.apply(JobStarted(id="W", at=0, block=block, job=job))
    if ok:
        p.apply(JobCompleted(id="W", at=0, block=block, job=job))
    else:
        p.apply(JobFailed(id="W", at=0, block=block, job=job, error="e", fatal=fatal))


def kinds(decision):
    return [type(ev).__name__ for ev in decision.events]


def test_first_decision_starts_the_workflow_and_fills_the_rate_limit_in_job_order():
    p = make([(3, 7), (2, 2)])
    d = step(p)
    assert kinds(d) == ["WorkflowStarted", "BlockStarted"]
    assert d.dispatch == [(0, 0), (0, 1), (0, 2)]
    assert not step(p)  # nothing more until a job ends


def test_each_finished_job_frees_one_slot_and_never_more_than_the_limit_run():
    p = make([(3, 7)])
    step(p)
    finish(p, 0, 1)
    assert step(p).dispatch == [(0, 3)]
    finish(p, 0, 0)
    finish(p, 0, 2)
    assert step(p).dispatch == [(0, 4), (0, 5)]
    in_flight = sum(j.in_flight for j in p.jobs[0])
    assert in_flight == 3


def test_a_rate_limit_below_one_runs_one_at_a_time():
    p = make([(0, 3)])
    assert step(p).dispatch == [(0, 0)]
    finish(p, 0, 0)
    assert step(p).dispatch == [(0, 1)]


def test_blocks_run_one_after_another():
    p = make([(5, 2), (5, 2)])
    d = step(p)
    assert all(b == 0 for b, _ in d.dispatch)
    finish(p, 0, 0)
    assert not step(p)  # block 1 waits for the last job of block 0
    finish(p, 0, 1)
    d = step(p)
    assert kinds(d) == ["BlockEnded", "BlockStarted"]
    assert d.events[0].status == "completed" and d.events[1].block == 1
    assert d.dispatch == [(1, 0), (1, 1)]
    finish(p, 1, 0)
    finish(p, 1, 1)
    d = step(p)
    assert kinds(d) == ["BlockEnded", "WorkflowEnded"]
    assert d.events[1].status == "completed" and not d.events[1].had_errors
    assert not step(p)  # an ended workflow decides nothing


def test_a_non_fatal_failure_lets_the_block_finish_and_later_blocks_run():
    p = make([(5, 3), (5, 1)])
    step(p)
    finish(p, 0, 0, ok=False)
    finish(p, 0, 1)
    finish(p, 0, 2)
    d = step(p)
    assert d.events[0].status == "failed" and d.events[0].has_error
    assert d.dispatch == [(1, 0)]
    finish(p, 1, 0)
    d = step(p)
    assert d.events[-1].status == "failed" and d.events[-1].had_errors


def test_a_fatal_failure_ends_the_block_and_the_workflow_at_once():
    p = make([(2, 5), (5, 1)])
    step(p)  # jobs 0 and 1 dispatched
    finish(p, 0, 0, ok=False, fatal=True)
    d = step(p)  # job 1 still runs: the runners cancel it when they see the workflow end
    assert not d.dispatch
    assert kinds(d) == ["BlockEnded", "WorkflowEnded"]
    assert d.events[0].status == "failed" and d.events[1].status == "failed"
    assert d.events[1].stopped_by == "fatal" and not d.events[1].was_es_stopped
    assert not any(job.dispatched for job in p.jobs[0][2:])  # the rest never ran
    assert not any(job.dispatched for job in p.jobs[1])
    assert not step(p)


def test_an_emergency_stop_mid_block_ends_everything_and_dispatches_nothing_more():
    p = make([(2, 5), (5, 1)])
    step(p)
    finish(p, 0, 0)
    p.stop("es")
    d = step(p)
    assert not d.dispatch
    assert kinds(d) == ["BlockEnded", "WorkflowEnded"]
    ended = d.events[1]
    assert ended.status == "failed" and ended.was_es_stopped and ended.stopped_by == "es" and not ended.had_errors
    assert [job.dispatched for job in p.jobs[0]] == [True, True, False, False, False]


def test_a_stop_between_blocks_starts_no_next_block():
    p = make([(5, 1), (5, 1)])
    step(p)
    finish(p, 0, 0)
    p.apply(CancelRequested(id="W", at=0))
    d = step(p)
    assert kinds(d) == ["BlockEnded", "WorkflowEnded"]  # block 1 never starts
    assert d.events[0].block == 0 and d.events[0].status == "completed"  # all its jobs had completed
    assert d.events[1].stopped_by == "cancel" and d.events[1].status == "failed"


def test_a_stop_before_anything_ran_still_ends_the_workflow():
    p = make([(5, 2)])
    p.stop("es")
    d = step(p)
    assert kinds(d) == ["WorkflowStarted", "WorkflowEnded"] and not d.dispatch
    assert d.events[1].was_es_stopped


def test_a_retrying_failure_keeps_the_job_in_flight():
    p = make([(1, 2)])
    step(p)
    p.apply(JobFailed(id="W", at=0, block=0, job=0, error="flaky", retrying=True))
    assert not step(p)  # job 0 is still in flight: job 1 waits
    finish(p, 0, 0)
    assert step(p).dispatch == [(0, 1)]


def test_past_the_failure_budget_nothing_more_is_dispatched():
    p = make([(1, 4)], max_failures=1)
    step(p)
    finish(p, 0, 0, ok=False)
    assert step(p).dispatch == [(0, 1)]  # one failure is within a budget of 1
    finish(p, 0, 1, ok=False)
    d = step(p)
    assert not d.dispatch and kinds(d) == ["BlockEnded", "WorkflowEnded"]


def test_a_rebuilt_workflow_resumes_without_dispatching_anything_twice():
    """The history of a workflow whose executor died mid-block, replayed into a fresh progress."""
    history = [
        WorkflowStarted(id="W", at=0),
        BlockStarted(id="W", at=0, block=0),
        BlockEnded(id="W", at=0, block=0, status="completed"),
        BlockStarted(id="W", at=0, block=1),
        JobStarted(id="W", at=0, block=1, job=0),
        JobCompleted(id="W", at=0, block=1, job=0),
        JobStarted(id="W", at=0, block=1, job=1),
    ]
    p = make([(2, 1), (2, 4)])
    for ev in history:
        p.apply(ev)
    p.mark_dispatched(1, 2)  # its command is still waiting in the work queue
    d = step(p)
    assert not d.events  # no second workflow or block start
    assert d.dispatch == []  # jobs 1 and 2 are in flight: the limit of 2 is reached
    finish(p, 1, 1)
    assert step(p).dispatch == [(1, 3)]


def test_replaying_its_own_events_changes_no_decision():
    p = make([(2, 3)])
    d = step(p)
    for ev in d.events:
        p.apply(ev)
    assert not step(p)
    p.apply(WorkflowEnded(id="W", at=0, status="completed"))
    assert not step(p)


# ---------------------------------------------------------------- gates


def fail(p, block, job, **fields):
    p.apply(JobStarted(id="W", at=0, block=block, job=job))
    p.apply(JobFailed(id="W", at=0, block=block, job=job, error=fields.pop("error", "e"), **fields))


@pytest.mark.parametrize("error", [
    "no token in bucket 'diskEraseSatellite' within 1 s",  # the job's own JobError, fatal or not
    "job crashed: DecodeError('JSON is malformed')",  # a malformed bucket value in wf_buckets
    "job crashed: TimeoutError()",  # a NATS timeout
    "gave up after 5 deliveries: each runner that took it died",  # the runner's own report
])
@pytest.mark.parametrize("max_failures", [None, 0, 5, 1_000_000])
def test_any_failure_of_a_gate_ends_the_workflow_and_no_erase_starts(error, max_failures):
    p = erase(max_failures=max_failures)
    assert step(p).dispatch == [(0, 0)]
    finish(p, 0, 0)  # validateDecom completed
    assert step(p).dispatch == [(0, 1)]
    fail(p, 0, 1, error=error, fatal=False)  # the event says non-fatal: the executor does not trust it
    d = step(p)
    assert not d.dispatch
    assert kinds(d) == ["BlockEnded", "WorkflowEnded"]
    assert d.events[1].status == "failed" and d.events[1].stopped_by == "fatal"
    assert not any(job.dispatched for block in p.jobs[1:] for job in block), "no diskErase may be dispatched"
    assert not step(p)


def test_a_gate_failing_for_good_after_retries_ends_the_workflow():
    p = erase()
    step(p)
    finish(p, 0, 0)
    step(p)
    fail(p, 0, 1, retrying=True)  # attempt 1 failed, attempt 2 follows: still in flight
    assert not step(p)
    fail(p, 0, 1, error="still no luck")  # the last attempt: failed for good
    d = step(p)
    assert d.events[-1].stopped_by == "fatal" and not d.dispatch


def test_nothing_after_a_gate_in_its_block_is_dispatched_until_the_gate_completed():
    # a user's own WorkReq may put the erases in the gate's block, with a high rate limit
    p = make([(10, ["sleep", "tokenBucket", "diskErase", "diskErase"])], is_gate=GATES.__contains__)
    assert step(p).dispatch == [(0, 0), (0, 1)]  # what precedes the gate may run beside it
    finish(p, 0, 0)
    assert not step(p)
    p.apply(JobStarted(id="W", at=0, block=0, job=1))
    p.apply(JobFailed(id="W", at=0, block=0, job=1, error="flaky", retrying=True))
    assert not step(p), "a retrying gate has not completed"
    finish(p, 0, 1)
    assert step(p).dispatch == [(0, 2), (0, 3)]


def test_a_failed_gate_in_a_wide_block_dispatches_nothing_it_guards():
    p = make([(10, ["tokenBucket", "diskErase", "diskErase"]), (5, 1)], is_gate=GATES.__contains__)
    assert step(p).dispatch == [(0, 0)]
    fail(p, 0, 0, error="job crashed: TimeoutError()")
    d = step(p)
    assert not d.dispatch and d.events[-1].stopped_by == "fatal"
    assert [job.dispatched for job in p.jobs[0]] == [True, False, False]


def test_a_cancelled_gate_ends_the_workflow_too():
    p = erase()
    step(p)
    fail(p, 0, 0, error="cancelled: a fatal failure ended its block")
    assert step(p).events[-1].status == "failed"


def test_a_fatal_failure_in_an_ended_block_still_ends_the_workflow_on_takeover():
    """An executor died after storing the failed block's end but not the workflow's: the one that
    takes over must not start the next block."""
    history = [
        WorkflowStarted(id="W", at=0),
        BlockStarted(id="W", at=0, block=0),
        JobStarted(id="W", at=0, block=0, job=0),
        JobCompleted(id="W", at=0, block=0, job=0),
        JobStarted(id="W", at=0, block=0, job=1),
        JobFailed(id="W", at=0, block=0, job=1, error="job crashed", fatal=False),
        BlockEnded(id="W", at=0, block=0, status="failed", has_error=True),
    ]
    p = erase()
    for ev in history:
        p.apply(ev)
    d = step(p)
    assert not d.dispatch and kinds(d) == ["WorkflowEnded"]
    assert d.events[0].stopped_by == "fatal"


def test_the_registry_tells_gates_apart_and_an_unknown_job_counts_as_one(jobs):
    is_gate = jobs.gate_predicate()
    assert {name for name in jobs.names() if is_gate(name)} == GATES
    assert not is_gate("sleep") and not is_gate("diskErase")
    assert is_gate("aJobThisExecutorNeverHeardOf"), "fail closed"

    class PluginGate:
        name, gate = "drainSite", True
        mandatory_args = optional_args = frozenset()

    assert JobRegistry([PluginGate()]).gate_predicate()("drainSite")


def test_a_plugin_gate_failing_non_fatally_ends_the_workflow():
    p = make([(1, ["drainSite"]), (1, 1)], is_gate={"drainSite"}.__contains__)
    step(p)
    fail(p, 0, 0, error="drain failed")
    d = step(p)
    assert d.events[-1].stopped_by == "fatal" and not d.dispatch


def test_a_job_a_runner_cancelled_for_an_emergency_stop_stops_the_workflow_as_one():
    """After a purge of wf_es each service notices at its own check: a runner may cancel first."""
    p = make([(1, 1), (1, 1)])
    step(p)
    fail(p, 0, 0, error="cancelled: emergency stop")
    d = step(p)
    assert kinds(d) == ["BlockEnded", "WorkflowEnded"] and not d.dispatch  # block 1 never starts
    assert d.events[1].was_es_stopped and d.events[1].stopped_by == "es"


# ---------------------------------------------------------------- pause and resume

from schemas import Paused, Resumed  # noqa: E402


def test_a_paused_workflow_dispatches_nothing_new_its_running_jobs_finish_and_resume_goes_on_at_the_rate_limit():
    p = make([(1, 3), (1, 1)])
    assert step(p).dispatch == [(0, 0)]
    p.apply(Paused(id="W", at=0, n=1, by="alice"))
    assert p.paused
    finish(p, 0, 0)  # the running job finishes and is recorded
    assert not step(p)  # nothing new while paused
    p.apply(Resumed(id="W", at=0, n=1, by="bob"))
    assert step(p).dispatch == [(0, 1)]  # one at a time, as before
    finish(p, 0, 1)
    p.apply(Paused(id="W", at=0, n=2, by="alice"))  # pause again: its own number
    assert not step(p)
    p.apply(Resumed(id="W", at=0, n=2))
    assert step(p).dispatch == [(0, 2)]


def test_a_paused_workflow_ends_its_finished_block_but_starts_no_next_one():
    p = make([(2, 2), (1, 1)])
    assert step(p).dispatch == [(0, 0), (0, 1)]
    p.apply(Paused(id="W", at=0, n=1))
    finish(p, 0, 0)
    finish(p, 0, 1)
    d = step(p)
    assert [type(ev) for ev in d.events] == [BlockEnded] and not d.dispatch
    assert not step(p)
    p.apply(Resumed(id="W", at=0, n=1))
    d = step(p)
    assert [type(ev) for ev in d.events] == [BlockStarted] and d.dispatch == [(1, 0)]


def test_pause_events_in_any_order_and_the_emergency_pause():
    p = make([(1, 2)])
    p.apply(Resumed(id="W", at=0, n=1))  # read before its pause: still not paused once both are in
    p.apply(Paused(id="W", at=0, n=1))
    assert not p.paused
    p.apply(Paused(id="W", at=0, n=2))
    p.apply(Paused(id="W", at=0, n=1))  # a duplicate of an old one changes nothing
    assert p.paused
    p.apply(Resumed(id="W", at=0, n=2))
    assert not p.paused
    p.es_paused = True
    assert p.paused and not step(p).dispatch


@pytest.mark.parametrize("stop", ["cancel", "es"])
def test_stop_and_cancel_win_over_pause(stop):
    p = make([(1, 3), (1, 1)])
    step(p)
    p.apply(Paused(id="W", at=0, n=1))
    if stop == "cancel":
        p.apply(CancelRequested(id="W", at=0))
    else:
        p.stop("es")
    d = step(p)
    ended = [ev for ev in d.events if isinstance(ev, WorkflowEnded)]
    assert ended and ended[0].status == "failed" and ended[0].stopped_by == stop and not d.dispatch


def test_a_fatal_failure_while_paused_ends_the_workflow():
    p = make([(2, 3)])
    step(p)
    p.apply(Paused(id="W", at=0, n=1))
    finish(p, 0, 0, ok=False, fatal=True)
    finish(p, 0, 1)
    d = step(p)
    assert any(isinstance(ev, WorkflowEnded) and ev.stopped_by == "fatal" for ev in d.events)
