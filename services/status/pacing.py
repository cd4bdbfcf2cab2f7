"""When a workflow's StatusResp is written: pure, no I/O.

At once when the workflow's own state (its head: verdict, start, end, approvals, pauses) changes;
else at most once per interval that grows with its size (MIN_WRITE_INTERVAL_S up to size /
WRITE_BYTES_PER_S), so the bytes written per job stay flat as workflows grow (rewriting it per batch
was quadratic); and at once when MAX_UNWRITTEN_EVENTS wait."""

from __future__ import annotations

from schemas import StatusResp

MIN_WRITE_INTERVAL_S = 0.05
WRITE_BYTES_PER_S = 20_000_000
MAX_UNWRITTEN_EVENTS = 5_000


def head(status: StatusResp) -> tuple[str, ...]:
    """What makes a write urgent when it changes (an approval is written at once: exec may wait for it)."""
    return (status.verdict, status.status, status.reason, status.executed_by, status.cancelled_by,
            str(len(status.approvals)), str(status.pauses), str(status.resumes))


def write_due(*, unwritten: int, urgent: bool, size: int, since_last_write_s: float) -> bool:
    """Whether a StatusResp of `size` bytes (as last written), with `unwritten` events folded in and
    not written, written `since_last_write_s` ago, is to be written now."""
    if not unwritten:
        return False
    interval_s = max(MIN_WRITE_INTERVAL_S, size / WRITE_BYTES_PER_S)
    return urgent or unwritten >= MAX_UNWRITTEN_EVENTS or since_last_write_s >= interval_s
