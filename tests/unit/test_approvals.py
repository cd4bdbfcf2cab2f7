"""The two-person rule's pure parts: which approvals count, role ranking, the requireApproval policy's
settings (fail closed), what the verdict carries, and how the status fold shows approvals and denials."""

from __future__ import annotations

import json
import random

import pytest

from schemas import (
    Approval,
    Approved,
    Denied,
    ExecRequested,
    StatusResp,
    Submitted,
    encoder,
    event_decoder,
    event_msg_id,
    event_subject,
    status_decoder,
    summarise,
    workreq_decoder,
)
from services.policy.approvals import (
    NONE,
    GivenApproval,
    Requirement,
    combine,
    counted,
    may_approve,
    missing_message,
    rank,
)
from services.policy.decide import approval_requirement, decide
from services.policy.registry import ConfigError, parse_policy_config
from services.status.fold import apply, new_status

WINDOW = 3600.0
NOW = 1_000_000.0
REQ = workreq_decoder.decode(b'{"name": "Guarded", "blocks": [{"jobs": [{"name": "sleep", "args": {"seconds": "1"}}]}]}')


def test_roles_rank_client_below_operator_below_admin():
    assert rank("client") < rank("operator") < rank("admin")
    assert rank("nobody-knows") == rank("client")  # an unknown role is a client's
    assert may_approve("operator", "operator") and may_approve("admin", "operator") and may_approve("operator", "client")
    assert not may_approve("client", "operator")


def test_only_distinct_people_other_than_the_submitter_within_the_window_count():
    given = [
        GivenApproval("sub", NOW - 10),  # the submitter: never
        GivenApproval("alice", NOW - 20, "first"),
        GivenApproval("alice", NOW - 5, "again"),  # one person counts once (their latest)
        GivenApproval("bob", NOW - WINDOW - 1),  # older than the exec window: no longer counts
        GivenApproval("carol", NOW - WINDOW),  # exactly at the edge: still counts
    ]
    valid = counted(given, "sub", NOW, WINDOW)
    assert [(a.by, a.comment) for a in valid] == [("carol", ""), ("alice", "again")]
    assert counted([], "sub", NOW, WINDOW) == []
    # order does not matter
    shuffled = list(given)
    random.Random(1).shuffle(shuffled)
    assert counted(shuffled, "sub", NOW, WINDOW) == valid


def test_the_412_message_says_how_many_it_has_and_needs():
    msg = missing_message("W1", 1, 2, Requirement(2, "operator"))
    assert "workflow W1 has 1 of 2 approvals (requireApproval: operators other than the submitter)" in msg


def test_several_entries_combine_to_the_strictest():
    assert combine([Requirement(1, "operator"), Requirement(3, "client")]) == Requirement(3, "operator")
    assert combine([]) == NONE


def policy_config(policies, jobs, registry):  # type: ignore[no-untyped-def]
    entry = {"Name": "Guarded", "Policies": [
        {"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["sleep"]}}, *policies]}
    return parse_policy_config(json.dumps(entry), registry, jobs)


async def test_require_approval_approves_and_says_what_it_needs(jobs, policies):
    config = policy_config([{"Name": "requireApproval", "Settings": {"approvers": 2, "role": "operator"}}], jobs, policies)
    assert await decide(REQ, jobs, config) is None  # approved by the policies as today
    assert approval_requirement("Guarded", config) == Requirement(2, "operator")
    assert approval_requirement("Other", config) == NONE
    plain = policy_config([], jobs, policies)
    assert approval_requirement("Guarded", plain).approvers == 0


@pytest.mark.parametrize("settings", [
    {"approvers": 0, "role": "operator"},
    {"approvers": 11, "role": "operator"},
    {"approvers": "2", "role": "operator"},
    {"approvers": True, "role": "operator"},
    {"approvers": 2, "role": "admin"},
    {"approvers": 2, "role": "Operator"},
    {"approvers": 2},
    {"role": "operator"},
    {"approvers": 2, "role": "operator", "extra": 1},
    {"Approvers": 2, "Role": "operator"},
])
def test_bad_require_approval_settings_are_a_configuration_error(jobs, policies, settings):
    with pytest.raises(ConfigError, match="requireApproval"):
        policy_config([{"Name": "requireApproval", "Settings": settings}], jobs, policies)


def test_old_approved_events_need_no_approval_and_approvals_have_their_own_subjects():
    old = event_decoder.decode(b'{"type": "approved", "id": "W", "at": 1.0}')
    assert isinstance(old, Approved) and (old.approvals_needed, old.approver_role) == (0, "")
    approval = Approval(id="W", at=1.0, by="alice", comment="ok")
    assert event_subject(approval) == "wf.evt.W.approval.alice" == event_msg_id(approval)
    assert event_subject(Denied(id="W", at=1.0, by="bob", comment="no")) == "wf.evt.W.denied"
    # an old StatusResp (JSON without the fields) reads as needing none, with none given
    old_status = status_decoder.decode(b'{"id": "W", "name": "N", "desc": ""}')
    assert (old_status.approvals, old_status.approvals_needed) == ([], 0)


def fold(*events) -> StatusResp:  # type: ignore[no-untyped-def]
    status = new_status(Submitted(id="W", at=0.0, req=REQ, by="sub"))
    for ev in events:
        apply(status, ev)
    return status


def test_the_fold_lists_approvals_once_per_person_and_a_denial_rejects():
    evs = [Approved(id="W", at=1.0, approvals_needed=2, approver_role="operator"),
           Approval(id="W", at=2.0, by="alice", comment="fine"), Approval(id="W", at=3.0, by="bob"),
           Approval(id="W", at=2.0, by="alice", comment="fine")]
    status = fold(*evs)
    assert status.verdict == "approved" and status.approvals_needed == 2
    assert [(a.by, a.at, a.comment) for a in status.approvals] == [
        ("alice", "1970-01-01T00:00:02.000Z", "fine"), ("bob", "1970-01-01T00:00:03.000Z", "")]
    assert fold(*reversed(evs)).approvals == status.approvals  # order does not matter
    denied = fold(Approved(id="W", at=1.0, approvals_needed=1, approver_role="client"),
                  Denied(id="W", at=2.0, by="erin", comment="wrong site"))
    assert (denied.verdict, denied.reason) == ("rejected", "denied by erin: wrong site")
    early = fold(Denied(id="W", at=2.0, by="erin", comment="wrong site"),
                 Approved(id="W", at=1.0, approvals_needed=1, approver_role="client"))
    assert (early.verdict, early.approvals_needed) == ("rejected", 1)
    assert fold(ExecRequested(id="W", at=1.0)).approvals == []
    # the summary of a large workflow keeps them
    summary = json.loads(encoder.encode(summarise(status)))
    assert summary["approvals_needed"] == 2 and [a["by"] for a in summary["approvals"]] == ["alice", "bob"]


def test_wf_status_shows_the_approvals():
    from wf.render import render

    status = json.loads(encoder.encode(fold(Approved(id="W", at=1.0, approvals_needed=2, approver_role="operator"),
                                            Approval(id="W", at=2.0, by="alice", comment="fine"))))
    assert "  approvals: 1 of 2 needed: alice at 1970-01-01T00:00:02.000Z (fine)" in render(status).splitlines()
    plain = json.loads(encoder.encode(fold(Approved(id="W", at=1.0))))
    assert "approvals" not in render(plain)
