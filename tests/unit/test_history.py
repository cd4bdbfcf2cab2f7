"""`wf history`: the timeline of a workflow's events, each with its actor (wf/history.py)."""

import json

import pytest

from schemas import (
    Approved,
    BlockEnded,
    BlockStarted,
    CancelRequested,
    ExecRequested,
    JobCompleted,
    JobFailed,
    JobStarted,
    Rejected,
    StoredReq,
    Submitted,
    WorkflowEnded,
    WorkflowStarted,
    encoder,
    workreq_decoder,
)
from wf.failures import Failure
from wf.history import entry, iso_ms, line, read_events, timeline

REQ = workreq_decoder.decode(
    b'{"name": "N", "blocks": [{"jobs": [{"name": "sleep", "args": {"seconds": "1"}}, {"name": "diskErase"}]},'
    b'{"jobs": [{"name": "validateDecom"}]}]}'
)
T0 = 1714564800.0  # 2024-05-01T12:00:00Z


def as_stored(*events):  # type: ignore[no-untyped-def]
    """The events as `wf history` reads them from WF_EVENTS: JSON."""
    return [json.loads(encoder.encode(ev)) for ev in events]


def run_of_a_workflow():  # type: ignore[no-untyped-def]
    return as_stored(
        Submitted(id="W", at=T0, req=REQ, by="client"),
        Approved(id="W", at=T0 + 0.0123),
        ExecRequested(id="W", at=T0 + 1, by="operator"),
        WorkflowStarted(id="W", at=T0 + 1.001),
        BlockStarted(id="W", at=T0 + 1.002, block=0),
        JobStarted(id="W", at=T0 + 1.003, block=0, job=0),
        JobStarted(id="W", at=T0 + 1.003, block=0, job=1),
        JobCompleted(id="W", at=T0 + 1.5, block=0, job=0),
        JobFailed(id="W", at=T0 + 1.6, block=0, job=1, attempt=1, error="flaky\nnetwork", retrying=True),
        JobStarted(id="W", at=T0 + 1.7, block=0, job=1, attempt=2),
        CancelRequested(id="W", at=T0 + 1.8, by="operator"),
        JobFailed(id="W", at=T0 + 1.9, block=0, job=1, attempt=2, error="cancelled"),
        BlockEnded(id="W", at=T0 + 2, block=0, status="failed", has_error=True),
        WorkflowEnded(id="W", at=T0 + 2.001, status="failed", had_errors=True, stopped_by="cancel"),
    )


def test_every_step_names_its_actor_people_from_the_events_services_by_kind():
    items = list(timeline(run_of_a_workflow()))
    assert [(i["step"], i["actor"]) for i in items] == [
        ("submitted", "client"),
        ("approved", "wf-policy"),
        ("exec_requested", "operator"),
        ("workflow.started", "wf-executor"),
        ("block.started", "wf-executor"),
        ("job.started", "wf-jobrunner"),
        ("job.started", "wf-jobrunner"),
        ("job.completed", "wf-jobrunner"),
        ("job.retrying", "wf-jobrunner"),
        ("job.started", "wf-jobrunner"),
        ("cancel_requested", "operator"),
        ("job.failed", "wf-jobrunner"),
        ("block.failed", "wf-executor"),
        ("workflow.failed", "wf-executor"),
    ]
    assert items[0]["at"] == "2024-05-01T12:00:00.000Z" and items[1]["at"] == "2024-05-01T12:00:00.012Z"
    assert items[0]["detail"] == "WorkReq N" and items[0]["workreq"] == "N"
    # job lines are compact: block.job, the job's name (from the WorkReq), attempt, error on one line
    assert items[5]["detail"] == "0.0 sleep attempt 1"
    assert items[8]["detail"] == "0.1 diskErase attempt 1: flaky network"
    assert items[11]["detail"] == "0.1 diskErase attempt 2: cancelled"
    assert (items[11]["block"], items[11]["job"], items[11]["name"], items[11]["state"], items[11]["attempt"],
            items[11]["error"]) == (0, 1, "diskErase", "failed", 2, "cancelled")
    assert items[12]["detail"] == "block 0, has_error"
    assert items[13]["detail"] == "stopped by cancel, had_errors" and items[13]["stopped_by"] == "cancel"


def test_a_rejection_carries_the_policys_reason_and_a_full_run_says_it_ran_to_its_end():
    rejected = entry(as_stored(Rejected(id="W", at=T0, reason="restrictJobTypes: erase not allowed"))[0])
    assert (rejected["step"], rejected["actor"], rejected["detail"]) == (
        "rejected", "wf-policy", "restrictJobTypes: erase not allowed")
    ended = entry(as_stored(WorkflowEnded(id="W", at=T0, status="completed"))[0])
    assert (ended["step"], ended["detail"]) == ("workflow.completed", "ran to its end")
    es = entry(as_stored(WorkflowEnded(id="W", at=T0, status="failed", was_es_stopped=True, stopped_by="es"))[0])
    assert es["detail"] == "stopped by es, was_es_stopped"


def test_text_lines_are_columns_and_an_unrecorded_actor_is_a_dash():
    old = [{"type": "submitted", "id": "W", "at": T0, "req": json.loads(encoder.encode(REQ))},
           {"type": "exec_requested", "id": "W", "at": T0 + 1}]  # events older than `by`
    lines = [line(item) for item in timeline(old)]
    assert lines[0].split() == ["2024-05-01T12:00:00.000Z", "submitted", "-", "WorkReq", "N"]
    assert lines[1].split() == ["2024-05-01T12:00:01.000Z", "exec_requested", "-"]
    assert lines[0].index("submitted") == lines[1].index("exec_requested")
    assert [item["actor"] for item in timeline(old)] == ["", ""]  # in --json: empty, not a dash
    # every entry is one JSON object, on one line
    for item in timeline(run_of_a_workflow()):
        assert "\n" not in json.dumps(item) and "\n" not in line(item)


def test_an_event_of_an_unknown_kind_still_shows_with_its_fields():
    item = entry({"type": "escalated", "id": "W", "at": T0, "by": "dana", "comment": "looks fine"})
    assert (item["step"], item["actor"], item["detail"]) == ("escalated", "dana", '{"comment":"looks fine"}')
    assert entry({"type": "paused", "id": "W", "at": "not a number"})["at"] == ""


def test_a_stored_workreq_still_names_the_workflow_but_not_its_jobs():
    stored = StoredReq(bucket="wf_workreqs", object="W", bytes=9, sha256="x", workreq="Big")
    items = list(timeline(as_stored(Submitted(id="W", at=T0, req_stored=stored, by="client"),
                                    JobStarted(id="W", at=T0, block=0, job=3))))
    assert items[0]["detail"] == "WorkReq Big"
    assert items[1]["detail"] == "0.3 attempt 1" and items[1]["name"] == ""


def test_iso_ms_is_utc_with_milliseconds():
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(T0 + 0.9999) == "2024-05-01T12:00:00.999Z"


@pytest.mark.parametrize("wf_id", ["*", ">", "a.b", "a b", "", "x" * 129])
async def test_an_id_that_is_not_one_is_refused_before_anything_is_read(wf_id):
    with pytest.raises(Failure, match="is not a workflow id"):
        await read_events(None, wf_id)  # type: ignore[arg-type]  # no connection is used


def test_the_command_is_registered():
    from wf.cli import build_parser

    args = build_parser().parse_args(["history", "01HX", "--json"])
    assert (args.command, args.id, args.json, args.is_async) == ("history", "01HX", True, True)


def test_approvals_and_denials_show_who_and_why():
    """The two-person rule's steps: the approver or denier is the actor, their comment the detail."""
    approved = entry({"type": "approved", "id": "W", "at": T0, "approvals_needed": 2, "approver_role": "operator"})
    assert (approved["actor"], approved["detail"]) == ("wf-policy", "needs 2 approvals (operators other than the submitter)")
    assert entry({"type": "approved", "id": "W", "at": T0})["detail"] == ""  # old events: no approval needed
    approval = entry({"type": "approval", "id": "W", "at": T0, "by": "dana", "comment": "looks fine"})
    assert (approval["step"], approval["actor"], approval["detail"]) == ("approval", "dana", "looks fine")
    denied = entry({"type": "denied", "id": "W", "at": T0, "by": "erin", "comment": "wrong  site"})
    assert (denied["step"], denied["actor"], denied["detail"]) == ("denied", "erin", "wrong site")


def test_pause_and_resume_show_who_and_which_pause():
    from schemas import Paused, Resumed

    paused = entry(json.loads(encoder.encode(Paused(id="W", at=1.0, n=2, by="alice"))))
    resumed = entry(json.loads(encoder.encode(Resumed(id="W", at=2.0, n=2, by="bob"))))
    assert (paused["step"], paused["actor"], paused["detail"], paused["n"]) == ("paused", "alice", "pause 2", 2)
    assert (resumed["step"], resumed["actor"], resumed["detail"]) == ("resumed", "bob", "resume of pause 2")
    assert line(paused).split()[1:] == ["paused", "alice", "pause", "2"]
