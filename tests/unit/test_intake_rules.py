"""wf-intake's refusals (services/intake/rules.py), decided from facts without a server: every
refusal of exec, approve, deny, cancel, pause and resume, with the code and message the contract
gives it, and the cases that go ahead."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from schemas import Approved, Denied, Rejected, Submitted
from services.common.endpoint import ApiError
from services.common.identity import Caller
from services.common.settings import SUBMIT_LIMITS, Settings
from services.intake.rules import (
    ApprovalFacts,
    ExecFacts,
    Refusal,
    RunFacts,
    StoredApproval,
    approval_refusal,
    cancel_refusal,
    counted_approvals,
    exec_refusal,
    identified,
    needs_approval,
    pause_refusal,
    refuse,
    stop_refusal,
)
from services.intake.workreq_limits import Limits
from services.policy.approvals import GivenApproval
from services.safety.stops import GO, PAUSE, STOP

ID = "01JAAAAAAAAAAAAAAAAAAAAAAA"
NOW = 10_000.0
WINDOW = 3600.0
SUBMITTED = Submitted(id=ID, at=NOW - 60, by="carol")  # no req: its WorkReq name is ""
APPROVED = Approved(id=ID, at=NOW - 59)
NEEDS_TWO = Approved(id=ID, at=NOW - 59, approvals_needed=2, approver_role="operator")


def given(seq: int, by: str, at: float = NOW - 10) -> StoredApproval:
    return StoredApproval(seq, GivenApproval(by, at))


# ------------------------------------------------------------ the emergency stop, and raising a refusal


def test_only_go_lets_new_work_through():
    assert stop_refusal("erase", GO) is None
    assert stop_refusal("erase", STOP) == Refusal(423, "emergency stop is not 'go' for 'erase'")
    assert stop_refusal("erase", PAUSE) == Refusal(423, "emergency stop is not 'go' for 'erase' (it is 'pause')")


def test_a_refusal_is_raised_as_the_error_reply():
    refuse(None)
    with pytest.raises(ApiError) as err:
        refuse(Refusal(409, "no"))
    assert (err.value.code, err.value.message) == (409, "no")


# ------------------------------------------------------------ exec

EXECUTABLE = ExecFacts(submitted=SUBMITTED, submitted_seq=5, approved=APPROVED)


def exec_says(facts: ExecFacts, es_state: str = GO, now: float = NOW) -> Refusal | None:
    return exec_refusal(ID, facts, es_state, now, WINDOW)


def test_an_approved_workflow_may_execute():
    assert exec_says(EXECUTABLE) is None
    assert not needs_approval(APPROVED) and not needs_approval(None) and needs_approval(NEEDS_TWO)


@pytest.mark.parametrize(("facts", "es_state", "expected"), [
    (ExecFacts(), GO, Refusal(404, f"unknown id {ID!r}")),
    (replace(EXECUTABLE, exec_requested=True), GO, Refusal(409, f"workflow {ID} is already executing or executed")),
    (replace(EXECUTABLE, cancel_requested=True), GO, Refusal(409, f"workflow {ID} was cancelled")),
    (EXECUTABLE, STOP, Refusal(423, "emergency stop is not 'go' for ''")),
    (EXECUTABLE, PAUSE, Refusal(423, "emergency stop is not 'go' for '' (it is 'pause')")),
    (replace(EXECUTABLE, approved=None, rejected=Rejected(id=ID, at=NOW, reason="no policy for 'x'")), GO,
     Refusal(412, f"workflow {ID} was rejected: no policy for 'x'")),
    (replace(EXECUTABLE, approved=None), GO, Refusal(412, f"workflow {ID} is not approved (verdict pending)")),
])
def test_exec_refusals(facts, es_state, expected):
    assert exec_says(facts, es_state) == expected


def test_exec_refusals_come_in_the_order_of_the_checks():
    everything_wrong = ExecFacts(submitted=SUBMITTED, exec_requested=True, cancel_requested=True,
                                 rejected=Rejected(id=ID, at=NOW, reason="r"))
    assert exec_says(everything_wrong, STOP).code == 409 and "already executing" in exec_says(everything_wrong).message
    assert exec_says(replace(everything_wrong, exec_requested=False), STOP).message == f"workflow {ID} was cancelled"
    assert exec_says(replace(everything_wrong, exec_requested=False, cancel_requested=False), STOP).code == 423


def test_exec_after_the_window_is_refused():
    late = NOW + WINDOW  # submitted at NOW - 60: 3660 s ago
    assert exec_says(EXECUTABLE, now=late) == Refusal(
        412, f"workflow {ID} was submitted 3660 s ago, past the exec window of 3600 s")
    assert exec_says(EXECUTABLE, now=SUBMITTED.at + WINDOW) is None  # exactly the window: still in it


def test_exec_waits_for_the_approvals_it_needs():
    facts = replace(EXECUTABLE, approved=NEEDS_TWO)
    missing = (f"workflow {ID} has 0 of 2 approvals (requireApproval: operators other than the submitter); "
               f"`wf approve {ID}` by 2 more")
    assert exec_says(facts) == Refusal(412, missing)
    one = replace(facts, approvals=[given(6, "alice")])
    assert exec_says(one) == Refusal(412, missing.replace("has 0 of", "has 1 of").replace("by 2 more", "by 1 more"))
    assert exec_says(replace(facts, approvals=[given(6, "alice"), given(7, "bob")])) is None


def test_approvals_that_do_not_count_leave_exec_refused():
    facts = replace(EXECUTABLE, approved=NEEDS_TWO)
    not_counted = [
        given(6, "alice"), given(7, "alice"),  # one person counts once
        given(8, "carol"),  # the submitter
        given(9, "dave", at=NOW - WINDOW - 1),  # older than the exec window
        given(4, "erin"),  # stored before the submission (seq 5)
    ]
    assert exec_says(replace(facts, approvals=not_counted)).code == 412
    assert "has 1 of 2" in exec_says(replace(facts, approvals=not_counted)).message
    assert [a.by for a in counted_approvals(SUBMITTED, 5, not_counted, NOW, WINDOW)] == ["alice"]


def test_a_denied_workflow_never_executes():
    denied = Denied(id=ID, at=NOW, by="bob", comment="not tonight")
    facts = replace(EXECUTABLE, approved=NEEDS_TWO, denied=denied, approvals=[given(6, "alice"), given(7, "dave")])
    assert exec_says(facts) == Refusal(412, f"workflow {ID} was denied by bob: not tonight")
    # without requireApproval a workflow cannot be denied: a stored denial is not looked at
    assert exec_says(replace(EXECUTABLE, denied=denied)) is None


# ------------------------------------------------------------ approve and deny

AWAITING = ApprovalFacts(submitted=SUBMITTED, submitted_seq=5, approved=NEEDS_TWO)
ALICE = Caller("alice", person=True)


def approval_says(facts: ApprovalFacts = AWAITING, who: Caller = ALICE, role: str = "operator",
                  what: str = "approve", now: float = NOW) -> Refusal | None:
    return approval_refusal(ID, facts, who, role, what, now, WINDOW)  # type: ignore[arg-type]


def test_an_operator_may_approve_and_deny():
    assert approval_says() is None
    assert approval_says(what="deny") is None
    assert approval_says(role="admin") is None


@pytest.mark.parametrize("what", ["approve", "deny"])
@pytest.mark.parametrize(("facts", "expected"), [
    (ApprovalFacts(), Refusal(404, f"unknown id {ID!r}")),
    (replace(AWAITING, denied=True), Refusal(409, f"workflow {ID} was denied; nothing to WHAT")),
    (replace(AWAITING, exec_requested=True),
     Refusal(409, f"workflow {ID} is already executing or executed; nothing to WHAT")),
    (replace(AWAITING, cancel_requested=True), Refusal(409, f"workflow {ID} was cancelled; nothing to WHAT")),
    (replace(AWAITING, approved=None, rejected=True), Refusal(409, f"workflow {ID} was rejected; nothing to WHAT")),
    (replace(AWAITING, approved=None),
     Refusal(409, f"workflow {ID} is not approved by the policies yet (verdict pending); nothing to WHAT")),
    (replace(AWAITING, approved=APPROVED),
     Refusal(409, f"workflow {ID} needs no approval (no requireApproval policy for its name); nothing to WHAT")),
])
def test_nothing_to_approve_or_deny(facts, expected, what):
    assert approval_says(facts, what=what) == Refusal(expected.code, expected.message.replace("WHAT", what))


def test_history_refusals_come_in_the_order_of_the_checks():
    everything = replace(AWAITING, denied=True, exec_requested=True, cancel_requested=True, approved=None)
    assert "was denied" in approval_says(everything).message
    assert "already executing" in approval_says(replace(everything, denied=False)).message
    assert "was cancelled" in approval_says(replace(everything, denied=False, exec_requested=False)).message


@pytest.mark.parametrize("what", ["approve", "deny"])
@pytest.mark.parametrize("name", ["", "a.b", "*", "x" * 65, "with space"])
def test_an_unidentified_caller_may_not_approve_or_deny(name, what):
    assert not identified(name)
    assert approval_says(who=Caller(name, person=True), what=what) == Refusal(
        403, f"an unidentified caller ({name}) may not {what} workflow {ID}")


def test_identified_names():
    assert identified("alice") and identified("x" * 64) and identified("a-b_c")


def test_the_submitter_may_deny_but_not_approve():
    carol = Caller("carol", person=True)
    assert approval_says(who=carol) == Refusal(
        403, f"you (carol) submitted workflow {ID} and may not approve it yourself "
             f"(requireApproval: operators other than the submitter); ask another person")
    assert approval_says(who=carol, role="client", what="deny") is None  # whatever their role


@pytest.mark.parametrize("what", ["approve", "deny"])
def test_a_role_below_the_required_one_may_not(what):
    assert approval_says(role="client", what=what) == Refusal(
        403, f"you (alice) are a client; to {what} workflow {ID} takes the role operator or above "
             f"(requireApproval: operators other than the submitter): use the credential of a person with that role")
    assert approval_says(role="no-such-role", what=what).code == 403  # an unknown role ranks as a client


def test_an_approval_counts_once_per_person_within_the_window():
    again = replace(AWAITING, previous_at=NOW - 10, previous_seq=8)
    assert approval_says(again) == Refusal(
        409, f"you (alice) already approved workflow {ID}; an approval counts once per person")
    assert approval_says(replace(again, previous_at=NOW - WINDOW)) == approval_says(again)  # exactly the window
    assert approval_says(replace(again, previous_at=NOW - WINDOW - 1)) is None  # expired: may approve afresh
    assert approval_says(again, what="deny") is None  # a denial does not look at approvals


def test_caller_refusals_come_before_a_repeated_approval():
    again = replace(AWAITING, previous_at=NOW - 10)
    assert approval_says(again, role="client").code == 403
    assert approval_says(replace(again, exec_requested=True)).code == 409
    assert "already executing" in approval_says(replace(again, exec_requested=True)).message


# ------------------------------------------------------------ cancel, pause and resume

RUNNING = RunFacts(known=True, exec_requested=True)


@pytest.mark.parametrize(("facts", "expected"), [
    (RunFacts(), Refusal(404, f"unknown id {ID!r}")),
    (replace(RUNNING, ended="completed"), Refusal(409, f"workflow {ID} already ended (completed)")),
    (replace(RUNNING, ended="failed"), Refusal(409, f"workflow {ID} already ended (failed)")),
])
def test_cancel_refusals(facts, expected):
    assert cancel_refusal(ID, facts) == expected


def test_what_may_be_cancelled():
    assert cancel_refusal(ID, RUNNING) is None
    assert cancel_refusal(ID, RunFacts(known=True)) is None  # not executed yet
    assert cancel_refusal(ID, replace(RUNNING, cancel_requested=True)) is None  # recorded again
    assert cancel_refusal(ID, replace(RUNNING, paused_n=1)) is None


@pytest.mark.parametrize("what", ["pause", "resume"])
@pytest.mark.parametrize(("facts", "expected"), [
    (RunFacts(), Refusal(404, f"unknown id {ID!r}")),
    (replace(RUNNING, ended="completed", cancel_requested=True),
     Refusal(409, f"workflow {ID} already ended (completed); nothing to WHAT")),
    (replace(RUNNING, ended="failed"), Refusal(409, f"workflow {ID} already ended (failed); nothing to WHAT")),
    (RunFacts(known=True, cancel_requested=True),
     Refusal(409, f"workflow {ID} is not running (never executed); nothing to WHAT")),
    (replace(RUNNING, cancel_requested=True, paused_n=1),
     Refusal(409, f"workflow {ID} was cancelled; nothing to WHAT")),
])
def test_nothing_to_pause_or_resume(facts, expected, what):
    assert pause_refusal(ID, facts, what) == Refusal(expected.code, expected.message.replace("WHAT", what))


def test_pause_and_resume_alternate():
    assert pause_refusal(ID, RUNNING, "pause") is None
    assert pause_refusal(ID, RUNNING, "resume") == Refusal(409, f"workflow {ID} is not paused")
    paused = replace(RUNNING, paused_n=1, paused_by="bob")
    assert pause_refusal(ID, paused, "pause") == Refusal(409, f"workflow {ID} is already paused (by bob)")
    assert pause_refusal(ID, replace(paused, paused_by=""), "pause") == Refusal(409, f"workflow {ID} is already paused")
    assert pause_refusal(ID, paused, "resume") is None
    resumed = replace(paused, resumed_n=1)
    assert pause_refusal(ID, resumed, "pause") is None
    assert pause_refusal(ID, resumed, "resume") == Refusal(409, f"workflow {ID} is not paused")


# ------------------------------------------------------------ submission limits from the environment


def test_submission_limits_are_read_by_settings():
    assert SUBMIT_LIMITS == tuple(f.name for f in fields(Limits))
    settings = Settings.from_env({"WF_MAX_BLOCKS": "7", "WF_MAX_DESC_LEN": "9", "WF_MAX_IN_FLIGHT": "8"})
    assert settings.submit_limits == {"max_blocks": "7", "max_desc_len": "9"}
    assert Limits.from_settings(settings) == Limits(max_blocks=7, max_desc_len=9)
    assert Limits.from_settings(Settings.from_env({})) == Limits()


def test_a_bad_submission_limit_stops_only_intake():
    settings = Settings.from_env({"WF_MAX_BLOCKS": "many"})  # every service reads its settings: no error
    with pytest.raises(ValueError):
        Limits.from_settings(settings)  # wf-intake, at its start


def test_secrets_stay_out_of_the_job_settings_and_out_of_repr():
    env = {"WF_SECRET_TOKEN": "hunter2-value", "WF_SECRETS_FILE": "/run/s.json", "WF_SSH_KEY": "/k",
           "WF_NATS_URL": "nats://runner:pw@127.0.0.1:4222", "WF_EXEC_USER": "wfexec"}
    settings = Settings.from_env(env)
    assert settings.job_settings == {"WF_SSH_KEY": "/k", "WF_EXEC_USER": "wfexec"}  # what jobs and plugins get
    assert settings.secret_settings == {"WF_SECRET_TOKEN": "hunter2-value", "WF_SECRETS_FILE": "/run/s.json"}
    assert "hunter2-value" not in repr(settings) and ":pw@" not in repr(settings)
