"""`wf ls`'s table says what waits for whom under the two-person rule."""

from __future__ import annotations

from services.common.ids import new_id
from wf.render import list_table


def status(**extra: object) -> dict:  # type: ignore[type-arg]
    return {"id": new_id(), "name": "SatelliteDiskErase", "verdict": "approved", "status": "not_started",
            "blocks": [], "submitted_by": "alice", **extra}


def test_a_workflow_awaiting_approval_says_how_many_and_not_by_whom():
    line = list_table([status(approvals_needed=2, approvals=[{"by": "bob", "at": "", "comment": ""}])]).splitlines()[1]
    assert "awaiting approval 1/2 (not by alice; given: bob)" in line


def test_the_submitters_own_approval_and_workflows_needing_none_show_nothing_awaited():
    table = list_table([status(approvals_needed=1, approvals=[{"by": "carol", "at": "", "comment": ""}]),
                        status(), status(approvals_needed=1, status="running")])
    assert "awaiting" not in table
    own = list_table([status(approvals_needed=1, approvals=[{"by": "alice", "at": "", "comment": ""}])])
    assert "awaiting approval 0/1 (not by alice)" in own
