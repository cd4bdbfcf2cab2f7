"""Register name: "requireApproval"

Settings:
    "approvers": how many distinct people must approve a WorkReq of this name before it may be
        executed, an integer from 1 to 10, like 2
    "role": the least role each of them must have, "client" or "operator" (an admin always may)

Result:
    Never violated: the WorkReq is approved as the other policies decide, and its `approved` event
    carries `approvals_needed` and `approver_role`. Its exec is refused (412, saying how many
    approvals it has and needs) until that many people, none of them the submitter, each of at least
    that role, approved it (`wf approve ID`, `wf.api.approve`) within the exec window. A denial
    (`wf deny ID --comment TEXT`) ends it rejected. Two entries for one WorkReq name: the larger
    count and the higher role.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from schemas import WorkReq
from services.jobs import JobRegistry

from ..approvals import Requirement
from ..vocabulary import Check, parse_settings

MAX_APPROVERS = 10


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    approvers: Annotated[int, Meta(ge=1, le=MAX_APPROVERS)]
    role: Literal["client", "operator"]


class ApprovalCheck:
    """A check that passes every WorkReq; what it requires is read by wf-policy (decide.py)."""

    def __init__(self, requirement: Requirement) -> None:
        self.requirement = requirement

    def __call__(self, req: WorkReq) -> None:
        return None


class RequireApproval:
    name = "requireApproval"

    def build(self, settings: dict[str, Any], jobs: JobRegistry) -> Check:
        parsed: Settings = parse_settings(self.name, Settings, settings)
        return ApprovalCheck(Requirement(parsed.approvers, parsed.role))
