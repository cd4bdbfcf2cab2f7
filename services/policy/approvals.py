"""The two-person rule (the requireApproval policy): pure decisions, no I/O, so unit tests call them.

A WorkReq whose policies include requireApproval is approved by wf-policy as any other, its `approved`
event saying how many approvals it needs and of which role. wf-intake then refuses its exec (412)
until that many distinct people, none of them the submitter, each of at least that role, approved it
(`wf.api.approve`) within the exec window. Roles rank client < operator < admin; a person's role is
read from KV `wf_people` (written by `wf up` and `wf user`), an unknown person is a client, and a
request from inside WF (the admin's credential) is an admin's."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ROLE_RANK = {"client": 0, "operator": 1, "admin": 2}
APPROVER_ROLES = ("client", "operator")  # what requireApproval's `role` may say
DEFAULT_ROLE = "client"  # a person missing from wf_people


def rank(role: str) -> int:
    """A role's rank; an unknown role ranks as a client."""
    return ROLE_RANK.get(role, 0)


def may_approve(caller_role: str, required_role: str) -> bool:
    return rank(caller_role) >= rank(required_role)


@dataclass(frozen=True)
class Requirement:
    approvers: int  # distinct people; 0: none needed
    role: str = DEFAULT_ROLE

    def describe(self) -> str:
        """`operators other than the submitter` (the noun of the role, plural)."""
        return f"{self.role}s other than the submitter"


NONE = Requirement(0, "")


def combine(requirements: Iterable[Requirement]) -> Requirement:
    """Several requireApproval entries for one WorkReq name: the strictest of each."""
    found = [r for r in requirements if r.approvers > 0]
    if not found:
        return NONE
    return Requirement(max(r.approvers for r in found), max((r.role for r in found), key=rank))


@dataclass(frozen=True)
class GivenApproval:
    by: str
    at: float  # unix seconds
    comment: str = ""


def counted(approvals: Iterable[GivenApproval], submitter: str, now: float, window_s: float) -> list[GivenApproval]:
    """The approvals that count: one per person (their latest), never the submitter's, none older than
    the exec window; oldest first."""
    latest: dict[str, GivenApproval] = {}
    for approval in approvals:
        if approval.by == submitter or now - approval.at > window_s:
            continue
        if approval.by not in latest or approval.at > latest[approval.by].at:
            latest[approval.by] = approval
    return sorted(latest.values(), key=lambda a: a.at)


def missing_message(wf_id: str, have: int, need: int, requirement: Requirement) -> str:
    """The 412 of an exec waiting for approvals."""
    return (f"workflow {wf_id} has {have} of {need} approvals (requireApproval: {requirement.describe()}); "
            f"`wf approve {wf_id}` by {need - have} more")
