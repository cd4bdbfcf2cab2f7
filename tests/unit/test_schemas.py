import time

import msgspec
import pytest

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
    event_decoder,
    event_msg_id,
    event_subject,
    workreq_decoder,
)
from services.common.ids import id_time_s, is_valid_id, new_id

GOOD = b'{"name": "SleepDemo", "desc": "d", "blocks": [{"desc": "b", "rate_limit": 2, "jobs": [{"name": "sleep", "args": {"seconds": "1"}}]}]}'


def test_a_good_workreq_decodes_with_defaults():
    req = workreq_decoder.decode(GOOD)
    assert req.name == "SleepDemo"
    assert req.max_failures is None
    assert req.blocks[0].jobs[0].args == {"seconds": "1"}
    assert req.blocks[0].jobs[0].desc == ""


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"not json", "malformed"),
        (b"[]", "Expected `object`"),
        (b'{"name": "X", "blocks": []}', "length >= 1"),
        (b'{"name": "X", "blocks": [{"jobs": []}]}', "length >= 1"),
        (b'{"name": "X"}', "missing required field `blocks`"),
        (b'{"name": "X", "blocks": [{"jobs": [{"name": "sleep"}]}], "extra": 1}', "unknown field `extra`"),
        (b'{"name": "X", "blocks": [{"jobs": [{"name": "sleep", "args": {"seconds": 1}}]}]}', "Expected `str`, got `int`"),
        (b'{"name": "a.b", "blocks": [{"jobs": [{"name": "sleep"}]}]}', "matching regex"),
        (b'{"name": "", "blocks": [{"jobs": [{"name": "sleep"}]}]}', "matching regex"),
        (b'{"name": "X", "max_failures": -1, "blocks": [{"jobs": [{"name": "sleep"}]}]}', ">= 0"),
        (b'{"name": "X", "blocks": [{"rate_limit": "5", "jobs": [{"name": "sleep"}]}]}', "Expected `int`"),
    ],
)
def test_bad_workreqs_are_refused_with_a_message_naming_the_problem(body, fragment):
    with pytest.raises(msgspec.DecodeError) as err:
        workreq_decoder.decode(body)
    assert fragment in str(err.value)


def test_rate_limit_below_one_means_one():
    req = workreq_decoder.decode(b'{"name": "X", "blocks": [{"rate_limit": -3, "jobs": [{"name": "sleep"}]}]}')
    assert req.blocks[0].jobs_in_flight_cap == 1


def test_event_subjects_follow_the_contract():
    i, t = "01ABC", 1.0
    assert event_subject(Approved(id=i, at=t)) == "wf.evt.01ABC.approved"
    assert event_subject(Rejected(id=i, at=t, reason="r")) == "wf.evt.01ABC.rejected"
    assert event_subject(ExecRequested(id=i, at=t)) == "wf.evt.01ABC.exec_requested"
    assert event_subject(WorkflowStarted(id=i, at=t)) == "wf.evt.01ABC.workflow.started"
    assert event_subject(WorkflowEnded(id=i, at=t, status="failed")) == "wf.evt.01ABC.workflow.failed"
    assert event_subject(BlockStarted(id=i, at=t, block=2)) == "wf.evt.01ABC.block.2.started"
    assert event_subject(BlockEnded(id=i, at=t, block=2, status="completed")) == "wf.evt.01ABC.block.2.completed"
    assert event_subject(JobStarted(id=i, at=t, block=1, job=7)) == "wf.evt.01ABC.job.1.7.started"
    assert event_subject(JobCompleted(id=i, at=t, block=1, job=7)) == "wf.evt.01ABC.job.1.7.completed"
    assert event_subject(JobFailed(id=i, at=t, block=1, job=7, error="e")) == "wf.evt.01ABC.job.1.7.failed"


def test_a_jobs_attempts_have_distinct_started_ids_but_one_terminal_id():
    a1 = JobStarted(id="X", at=1, block=0, job=0, attempt=1)
    a2 = JobStarted(id="X", at=2, block=0, job=0, attempt=2)
    assert event_msg_id(a1) != event_msg_id(a2)
    c1 = JobCompleted(id="X", at=1, block=0, job=0, attempt=1)
    c2 = JobCompleted(id="X", at=2, block=0, job=0, attempt=2)
    assert event_msg_id(c1) == event_msg_id(c2)


def test_every_event_round_trips_through_one_decoder():
    req = workreq_decoder.decode(GOOD)
    events = [
        Submitted(id="X", at=1.5, req=req),
        JobFailed(id="X", at=2.0, block=0, job=0, error="boom", fatal=True),
        WorkflowEnded(id="X", at=3.0, status="completed"),
    ]
    for ev in events:
        assert event_decoder.decode(encoder.encode(ev)) == ev


def test_ids_are_unique_time_ordered_subject_tokens():
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(is_valid_id(i) for i in ids)
    assert abs(id_time_s(ids[0]) - time.time()) < 5
    assert new_id(now_ms=1) > ids[-1]  # a clock that steps back does not break the order
    assert not is_valid_id("wf.evt.>") and not is_valid_id("")
