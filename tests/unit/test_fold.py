import itertools
import random

from schemas import (
    Approved,
    BlockEnded,
    BlockStarted,
    ExecRequested,
    JobCompleted,
    JobFailed,
    JobStarted,
    Rejected,
    Submitted,
    WorkflowEnded,
    WorkflowStarted,
    encoder,
    workreq_decoder,
)
from services.status.fold import apply, new_status

REQ = workreq_decoder.decode(
    b'{"name": "N", "desc": "d", "blocks": ['
    b'{"desc": "b0", "jobs": [{"name": "sleep", "args": {"seconds": "1"}}, {"name": "sleep", "args": {"seconds": "2"}}]},'
    b'{"desc": "b1", "jobs": [{"name": "sleep", "args": {"seconds": "3"}}]}]}'
)


def history(fail_job=False):
    t = 0.0
    evs = [Submitted(id="W", at=t, req=REQ), Approved(id="W", at=t), ExecRequested(id="W", at=t), WorkflowStarted(id="W", at=t)]
    evs += [BlockStarted(id="W", at=t, block=0), JobStarted(id="W", at=t, block=0, job=0), JobStarted(id="W", at=t, block=0, job=1)]
    evs.append(JobCompleted(id="W", at=t, block=0, job=0))
    if fail_job:
        evs.append(JobFailed(id="W", at=t, block=0, job=1, error="disk on fire"))
        evs.append(BlockEnded(id="W", at=t, block=0, status="failed", has_error=True))
    else:
        evs.append(JobCompleted(id="W", at=t, block=0, job=1))
        evs.append(BlockEnded(id="W", at=t, block=0, status="completed"))
    evs += [BlockStarted(id="W", at=t, block=1), JobStarted(id="W", at=t, block=1, job=0), JobCompleted(id="W", at=t, block=1, job=0)]
    evs.append(BlockEnded(id="W", at=t, block=1, status="completed"))
    evs.append(WorkflowEnded(id="W", at=t, status="failed" if fail_job else "completed", had_errors=fail_job))
    return evs


def fold(events):
    status = new_status(events[0])
    for ev in events:
        apply(status, ev)
    return status


def test_an_in_order_history_gives_the_full_status():
    status = fold(history())
    assert (status.id, status.name, status.desc, status.verdict, status.status) == ("W", "N", "d", "approved", "completed")
    assert [b.status for b in status.blocks] == ["completed", "completed"]
    assert [j.status for b in status.blocks for j in b.jobs] == ["completed"] * 3
    assert status.blocks[0].jobs[1].args == {"seconds": "2"}
    assert not status.had_errors


def test_a_failed_job_marks_its_block_and_the_workflow():
    status = fold(history(fail_job=True))
    assert status.status == "failed" and status.had_errors
    assert status.blocks[0].has_error and status.blocks[0].status == "failed"
    assert status.blocks[0].jobs[1].error == "disk on fire"
    assert status.blocks[1].status == "completed" and not status.blocks[1].has_error


def test_duplicated_events_change_nothing():
    events = history(fail_job=True)
    once = encoder.encode(fold(events))
    status = fold(events)
    assert not any(apply(status, ev) for ev in events)  # applying everything again reports no change
    assert encoder.encode(status) == once
    doubled = [ev for ev in events for _ in range(2)]
    assert encoder.encode(fold(doubled)) == once


def test_any_order_of_the_same_events_gives_the_same_status():
    for failed in (False, True):
        events = history(fail_job=failed)
        expected = encoder.encode(fold(events))
        rng = random.Random(7)
        for _ in range(200):
            rest = events[1:]
            rng.shuffle(rest)
            assert encoder.encode(fold([events[0], *rest])) == expected


def test_a_later_start_never_moves_a_finished_job_back():
    status = fold(history())
    assert not apply(status, JobStarted(id="W", at=9, block=0, job=0, attempt=2))
    assert status.blocks[0].jobs[0].status == "completed"


def test_first_verdict_wins():
    for first, second in itertools.permutations([Approved(id="W", at=0), Rejected(id="W", at=0, reason="no")]):
        status = fold([Submitted(id="W", at=0, req=REQ), first, second])
        assert status.verdict == ("approved" if isinstance(first, Approved) else "rejected")


def test_events_for_jobs_outside_the_workreq_are_ignored():
    status = fold(history()[:4])
    assert not apply(status, JobCompleted(id="W", at=0, block=5, job=0))
    assert not apply(status, JobCompleted(id="W", at=0, block=0, job=9))


def test_a_retried_attempt_shows_its_error_until_the_job_ends():
    base = history()[:6]  # ... block 0 started, job 0 started
    retry = JobFailed(id="W", at=0, block=0, job=0, attempt=1, error="flaky", retrying=True)
    status = fold([*base, retry])
    job = status.blocks[0].jobs[0]
    assert job.status == "running" and job.error == "attempt 1 failed, retrying: flaky"
    assert not status.had_errors and not status.blocks[0].has_error
    done = JobCompleted(id="W", at=0, block=0, job=0, attempt=2)
    for order in ([retry, done], [done, retry]):
        status = fold([*base, *order])
        assert (status.blocks[0].jobs[0].status, status.blocks[0].jobs[0].error) == ("completed", "")


def test_a_status_too_large_for_one_message_is_written_as_a_summary_that_counts_jobs():
    import json

    from schemas import StoredReq, omits_jobs
    from services.status.storage import encode_status
    from services.workreqs import HEADROOM
    from wf.render import render, summary_line

    status = fold(history(fail_job=True))
    full, size = encode_status(status, max_payload=10 * 1024 * 1024)
    assert full == encoder.encode(status) and size == len(full) and not omits_jobs(full)

    small, size_again = encode_status(status, max_payload=HEADROOM + len(full) - 1)  # one byte short
    assert size_again == len(full) and omits_jobs(small)
    summary = json.loads(small)
    assert summary["jobs_omitted"] is True and summary["status"] == status.status == "failed"
    assert [b["jobs"] for b in summary["blocks"]] == [[], []]
    assert [b["job_counts"] for b in summary["blocks"]] == [
        {"not_started": 0, "running": 0, "completed": 1, "failed": 1},
        {"not_started": 0, "running": 0, "completed": 1, "failed": 0},
    ]
    view = render(summary)  # the counts, as from a full StatusResp (a failed job is done too)
    assert "2/2 done, 1 failed" in view and "1/1 done" in view and "counts only" in view
    assert summary_line(summary).endswith("jobs 3/3 done, 1 failed") and summary_line(summary) == summary_line(
        json.loads(full))
    # the name travels with a stored WorkReq, so a submitted event without one still names it
    stored = Submitted(id="W", at=0, req_stored=StoredReq(bucket="b", object="W", bytes=1, sha256="x", workreq="N"))
    assert stored.workreq_name == "N" == Submitted(id="W", at=0, req=REQ).workreq_name


def test_who_submitted_executed_and_cancelled_is_folded_in_and_summarised():
    from schemas import CancelRequested, summarise

    events = [Submitted(id="W", at=0, req=REQ, by="alice"), Approved(id="W", at=0), ExecRequested(id="W", at=1, by="bob"),
              WorkflowStarted(id="W", at=1), CancelRequested(id="W", at=2, by="carol"),
              CancelRequested(id="W", at=3, by="dave")]  # a second cancel: the first asked is recorded
    status = fold(events)
    assert (status.submitted_by, status.executed_by, status.cancelled_by) == ("alice", "bob", "carol")
    summary = summarise(status)
    assert (summary.submitted_by, summary.executed_by, summary.cancelled_by) == ("alice", "bob", "carol")
    # the exec and the cancel each change the status (so the projection writes them)
    status = fold(events[:2])
    assert apply(status, events[2]) and status.executed_by == "bob"
    assert not apply(status, events[2])  # again: nothing new
    assert apply(status, events[4]) and status.cancelled_by == "carol"
    assert not apply(status, events[5]) and status.cancelled_by == "carol"


def test_events_and_statuses_older_than_the_actor_fields_still_decode_and_fold_to_empty():
    import json

    from schemas import event_decoder, status_decoder

    old = [b'{"type": "submitted", "id": "W", "at": 0, "req": %s}' % encoder.encode(REQ),
           b'{"type": "approved", "id": "W", "at": 0}', b'{"type": "exec_requested", "id": "W", "at": 0}',
           b'{"type": "cancel_requested", "id": "W", "at": 0}']
    events = [event_decoder.decode(data) for data in old]
    assert [ev.by for ev in (events[0], events[2], events[3])] == ["", "", ""]
    status = fold(events)
    assert (status.submitted_by, status.executed_by, status.cancelled_by) == ("", "", "")
    # a StatusResp stored before the fields existed
    stored = json.loads(encoder.encode(status))
    for key in ("submitted_by", "executed_by", "cancelled_by"):
        del stored[key]
    again = status_decoder.decode(json.dumps(stored))
    assert (again.submitted_by, again.executed_by, again.cancelled_by) == ("", "", "")
    assert encoder.encode(again) == encoder.encode(status)


# ---------------------------------------------------------------- pause and resume

from schemas import Paused, Resumed  # noqa: E402


def _paused_history():
    evs = history()
    head, tail = evs[:7], evs[7:]  # up to block 0's jobs started
    return head + [Paused(id="W", at=1, n=1, by="alice"), Resumed(id="W", at=2, n=1, by="bob"),
                   Paused(id="W", at=3, n=2, by="carol")] + tail[:2]


def test_a_paused_workflow_says_paused_and_who_paused_it_and_running_again_on_resume():
    evs = _paused_history()
    status = fold(evs)
    assert status.status == "paused" and status.paused_by == "carol" and (status.pauses, status.resumes) == (2, 1)
    apply(status, Resumed(id="W", at=4, n=2, by="dave"))
    assert status.status == "running" and status.paused_by == ""
    status = fold(evs[:8])
    assert status.status == "paused" and status.paused_by == "alice"
    status = fold(evs[:9])
    assert status.status == "running" and status.paused_by == ""


def test_pause_events_in_any_order_give_the_same_status():
    evs = _paused_history()
    expected = encoder.encode(fold(evs))
    rng = random.Random(7)
    for _ in range(200):
        rest = evs[1:]
        rng.shuffle(rest)
        assert encoder.encode(fold([evs[0], *rest])) == expected


def test_an_ended_workflow_is_not_paused():
    evs = history() + [Paused(id="W", at=5, n=1, by="alice")]
    status = fold(evs)
    assert status.status == "completed" and status.paused_by == ""
    evs = history()[:3] + [Paused(id="W", at=5, n=1, by="alice")]  # paused before the executor started it
    status = fold(evs)
    assert status.status == "not_started" and status.paused_by == "alice"
    apply(status, WorkflowStarted(id="W", at=6))
    assert status.status == "paused" and status.paused_by == "alice"


def test_a_jobs_output_is_its_terminal_events_whatever_the_order():
    base = history()[:6]
    retry = JobFailed(id="W", at=0, block=0, job=0, attempt=1, error="flaky", retrying=True, output="first try\n")
    done = JobCompleted(id="W", at=0, block=0, job=0, attempt=2, output="second try: ok\n")
    status = fold([*base, retry])
    assert status.blocks[0].jobs[0].output == "first try\n"  # shown while it is retried
    for order in ([retry, done], [done, retry], [done, done, retry]):
        assert fold([*base, *order]).blocks[0].jobs[0].output == "second try: ok\n"
    failed = JobFailed(id="W", at=0, block=0, job=1, error="exited with code 2", output="boom\n")
    assert fold([*base, failed]).blocks[0].jobs[1].output == "boom\n"
    assert fold(history()).blocks[1].jobs[0].output == ""  # a job that printed nothing


def test_outputs_are_cut_before_a_status_is_summarised():
    """300 jobs of 4 KiB output each do not fit a 1 MiB message: the outputs are cut (wf logs has
    them), every job entry is kept; only a status still too large becomes a summary."""
    from schemas import BlockStatus, JobStatus, StatusResp, status_decoder
    from services.status.storage import OUTPUT_SHORT, encode_status

    jobs = [JobStatus(name="exec", desc="", args={}, status="completed", output="x" * 4000 + f"end {n}")
            for n in range(300)]
    status = StatusResp(id="W", name="N", desc="", blocks=[BlockStatus(desc="b", jobs=jobs)])
    data, whole = encode_status(status, 1024 * 1024)
    assert whole > 1024 * 1024 and len(data) <= 1024 * 1024
    kept = status_decoder.decode(data)
    assert len(kept.blocks[0].jobs) == 300
    assert all(len(j.output.encode()) <= OUTPUT_SHORT and j.output.endswith(f"end {n}")
               for n, j in enumerate(kept.blocks[0].jobs))
    assert status.blocks[0].jobs[0].output.startswith("x" * 4000)  # the projection's own copy is whole
