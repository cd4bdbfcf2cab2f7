"""What wf-intake refuses, decided from facts: pure, no I/O, so unit tests call it directly.

Each control request (exec, approve, deny, cancel, pause, resume) has the same shape, as the
executor's (services/executor/progress.py): control.py reads the facts it needs from the workflow's
stored events in one round of concurrent reads, a function here decides, and only then does
control.py write. A refusal is the contract's error code and message; None lets the request through.

Every refusal is checked in the order the contract's errors are listed for the request: an unknown
id first (404), then what the workflow's history rules out (409), then the emergency stop (423) and
what the workflow still lacks (412)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from schemas import Approved, Denied, Rejected, Submitted, is_token
from services.common.endpoint import ApiError
from services.common.identity import Caller
from services.policy import approvals
from services.safety.stops import GO, PAUSE


@dataclass(frozen=True)
class Refusal:
    """An error reply: one of the contract's codes and what to tell the caller."""

    code: int
    message: str


def refuse(refusal: Refusal | None) -> None:
    """Raise a decision's refusal as the error reply (the endpoint sends it)."""
    if refusal is not None:
        raise ApiError(refusal.code, refusal.message)


def stop_refusal(workreq: str, es_state: str) -> Refusal | None:
    """423 unless the name's emergency stop is `go`: `pause` refuses new work as `stop` does
    (the contract's 423 is "not go"), while the workflows already running wait to resume."""
    if es_state == GO:
        return None
    return Refusal(423, f"emergency stop is not 'go' for {workreq!r}" + (" (it is 'pause')" if es_state == PAUSE else ""))


# ------------------------------------------------------------ exec


@dataclass(frozen=True)
class StoredApproval:
    """An `approval` event and where it is in WF_EVENTS."""

    seq: int
    approval: approvals.GivenApproval


@dataclass(frozen=True)
class ExecFacts:
    """What an exec needs to know of one workflow's stored events."""

    submitted: Submitted | None = None  # None: unknown id
    submitted_seq: int = 0
    exec_requested: bool = False
    cancel_requested: bool = False
    approved: Approved | None = None
    rejected: Rejected | None = None
    denied: Denied | None = None
    approvals: list[StoredApproval] = field(default_factory=list)  # in stream order


def needs_approval(approved: Approved | None) -> bool:
    """Whether the workflow waits for approvals (requireApproval): only such a workflow can be denied."""
    return approved is not None and approved.approvals_needed > 0


def counted_approvals(submitted: Submitted, submitted_seq: int, stored: list[StoredApproval], now: float,
                      exec_window_s: float) -> list[approvals.GivenApproval]:
    """The approvals that count towards exec: stored after the submission, then as
    `approvals.counted` says (one per person, never the submitter's, within the exec window)."""
    given = [s.approval for s in stored if s.seq > submitted_seq]
    return approvals.counted(given, submitted.by, now, exec_window_s)


def exec_refusal(wf_id: str, facts: ExecFacts, es_state: str, now: float, exec_window_s: float) -> Refusal | None:
    """Why an exec of the workflow is refused, or None when it may go ahead. `es_state`: the
    emergency stop of its name (GO, PAUSE or STOP); `now`: unix seconds."""
    submitted = facts.submitted
    if submitted is None:
        return Refusal(404, f"unknown id {wf_id!r}")
    if facts.exec_requested:
        return Refusal(409, f"workflow {wf_id} is already executing or executed")
    if facts.cancel_requested:
        return Refusal(409, f"workflow {wf_id} was cancelled")
    stopped = stop_refusal(submitted.workreq_name, es_state)
    if stopped is not None:
        return stopped
    if facts.approved is None:
        if facts.rejected is not None:
            return Refusal(412, f"workflow {wf_id} was rejected: {facts.rejected.reason}")
        return Refusal(412, f"workflow {wf_id} is not approved (verdict pending)")
    age_s = now - submitted.at
    if age_s > exec_window_s:
        return Refusal(412, f"workflow {wf_id} was submitted {age_s:.0f} s ago, past the exec window of {exec_window_s:.0f} s")
    if needs_approval(facts.approved):
        if facts.denied is not None:
            return Refusal(412, f"workflow {wf_id} was denied by {facts.denied.by}: {facts.denied.comment}")
        requirement = approvals.Requirement(facts.approved.approvals_needed, facts.approved.approver_role)
        have = len(counted_approvals(submitted, facts.submitted_seq, facts.approvals, now, exec_window_s))
        if have < requirement.approvers:
            return Refusal(412, approvals.missing_message(wf_id, have, requirement.approvers, requirement))
    return None


# ------------------------------------------------------------ approve and deny (requireApproval)


@dataclass(frozen=True)
class ApprovalFacts:
    """What an approval or a denial needs to know of one workflow's stored events."""

    submitted: Submitted | None = None  # None: unknown id
    submitted_seq: int = 0
    denied: bool = False
    exec_requested: bool = False
    cancel_requested: bool = False
    approved: Approved | None = None
    rejected: bool = False
    previous_at: float | None = None  # the caller's own last approval (approve only): when, and where
    previous_seq: int = 0


def identified(name: str) -> bool:
    """Whether a caller's name can be an approver's: a token of at most 64 characters (it is the last
    token of the approval's subject)."""
    return is_token(name) and len(name) <= 64


def approval_refusal(wf_id: str, facts: ApprovalFacts, who: Caller, role: str, what: Literal["approve", "deny"],
                     now: float, exec_window_s: float) -> Refusal | None:
    """Why the caller may not approve (or deny) the workflow, or None. `role`: the caller's role
    (wf_people). 404 unknown; 409 when there is nothing to approve or deny (no approval needed, not
    approved, denied, executing, executed, cancelled) or the caller approved it already; 403 when the
    caller may not (unidentified, the submitter approving, a role below the one required)."""
    submitted = facts.submitted
    if submitted is None:
        return Refusal(404, f"unknown id {wf_id!r}")
    if facts.denied:
        return Refusal(409, f"workflow {wf_id} was denied; nothing to {what}")
    if facts.exec_requested:
        return Refusal(409, f"workflow {wf_id} is already executing or executed; nothing to {what}")
    if facts.cancel_requested:
        return Refusal(409, f"workflow {wf_id} was cancelled; nothing to {what}")
    approved = facts.approved
    if approved is None:
        state = "was rejected" if facts.rejected else "is not approved by the policies yet (verdict pending)"
        return Refusal(409, f"workflow {wf_id} {state}; nothing to {what}")
    if not needs_approval(approved):
        return Refusal(409, f"workflow {wf_id} needs no approval (no requireApproval policy for its name); "
                            f"nothing to {what}")
    requirement = approvals.Requirement(approved.approvals_needed, approved.approver_role)
    if not identified(who.name):
        return Refusal(403, f"an unidentified caller ({who.name}) may not {what} workflow {wf_id}")
    if what == "approve" and who.name == submitted.by:
        return Refusal(403, f"you ({who.name}) submitted workflow {wf_id} and may not approve it yourself "
                            f"(requireApproval: {requirement.describe()}); ask another person")
    if not approvals.may_approve(role, requirement.role) and not (what == "deny" and who.name == submitted.by):
        return Refusal(403, f"you ({who.name}) are a {role}; to {what} workflow {wf_id} takes the role "
                            f"{requirement.role} or above (requireApproval: {requirement.describe()}): "
                            f"use the credential of a person with that role")
    if what == "approve" and facts.previous_at is not None and now - facts.previous_at <= exec_window_s:
        return Refusal(409, f"you ({who.name}) already approved workflow {wf_id}; an approval counts once per person")
    return None


# ------------------------------------------------------------ cancel, pause and resume one workflow


@dataclass(frozen=True)
class RunFacts:
    """What a cancel, a pause or a resume needs to know of one workflow's stored events."""

    known: bool = False  # its `submitted` event is stored
    ended: str = ""  # "completed" or "failed" once the workflow ended (completed if both are stored)
    exec_requested: bool = False
    cancel_requested: bool = False
    paused_n: int = 0  # the `n` of its last `paused` event (0: none, or unreadable)
    paused_by: str = ""
    paused_seq: int = 0
    resumed_n: int = 0  # the `n` of its last `resumed` event (0: none, or unreadable)
    resumed_seq: int = 0


def cancel_refusal(wf_id: str, facts: RunFacts) -> Refusal | None:
    """404 unknown, 409 already ended; else None (a cancel of a cancelled workflow is recorded again)."""
    if not facts.known:
        return Refusal(404, f"unknown id {wf_id!r}")
    if facts.ended:
        return Refusal(409, f"workflow {wf_id} already ended ({facts.ended})")
    return None


def pause_refusal(wf_id: str, facts: RunFacts, what: Literal["pause", "resume"]) -> Refusal | None:
    """404 unknown; 409 when the workflow ended, never executed, was cancelled, or is already paused
    (pause) or not paused (resume); else None."""
    if not facts.known:
        return Refusal(404, f"unknown id {wf_id!r}")
    if facts.ended:
        return Refusal(409, f"workflow {wf_id} already ended ({facts.ended}); nothing to {what}")
    if not facts.exec_requested:
        return Refusal(409, f"workflow {wf_id} is not running (never executed); nothing to {what}")
    if facts.cancel_requested:
        return Refusal(409, f"workflow {wf_id} was cancelled; nothing to {what}")
    if what == "pause" and facts.paused_n > facts.resumed_n:
        return Refusal(409, f"workflow {wf_id} is already paused" + (f" (by {facts.paused_by})" if facts.paused_by else ""))
    if what == "resume" and facts.paused_n <= facts.resumed_n:
        return Refusal(409, f"workflow {wf_id} is not paused")
    return None
