"""Wire types: the one contract every service imports.

Outside input (WorkReq, API requests) is decoded strictly: unknown fields and wrong types are errors.
Events are a tagged union (`type` field) so any consumer can decode any event with one decoder; the
subject an event is published on is derived from the event itself (`event_subject`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from . import subjects

# Names that end up in KV keys and subject tokens.
TOKEN_PATTERN = r"^[A-Za-z0-9_-]+$"
_TOKEN_RE = re.compile(TOKEN_PATTERN)

Token = Annotated[str, Meta(pattern=TOKEN_PATTERN, max_length=128)]


def is_token(text: str) -> bool:
    return bool(_TOKEN_RE.match(text))


# ---------------------------------------------------------------- WorkReq (outside input)

# Bounds on the WorkReq's numbers (400 naming the field past them). A rate limit below 1 means 1 (the
# contract's rule, so down to -10,000 is still accepted); above the most jobs a block may hold it
# means nothing more. A failure budget above a million is no budget.
MAX_RATE_LIMIT = 10_000
MAX_FAILURES_LIMIT = 1_000_000
RateLimit = Annotated[int, Meta(ge=-MAX_RATE_LIMIT, le=MAX_RATE_LIMIT)]
FailureBudget = Annotated[int, Meta(ge=0, le=MAX_FAILURES_LIMIT)]


class Job(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    desc: str = ""
    args: dict[str, str] = {}


class Block(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    desc: str = ""
    # The contract's name, and the seed's: not a rate but the most of this block's jobs in flight at
    # once (dispatched and not ended), enforced by the executor (services/executor/progress.py).
    rate_limit: RateLimit = 0
    jobs: Annotated[list[Job], Meta(min_length=1)]

    @property
    def jobs_in_flight_cap(self) -> int:
        """`rate_limit` as the executor applies it: the seed's rule, below 1 means 1."""
        return max(1, self.rate_limit)


class WorkReq(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Token
    desc: str = ""
    max_failures: FailureBudget | None = None
    blocks: Annotated[list[Block], Meta(min_length=1)]


class IdRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of `wf.api.exec`, `wf.api.status`, `wf.api.cancel`, `wf.api.pause` and `wf.api.resume`."""

    id: str


class LogsRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of `wf.api.logs`: one job of a workflow (block and job are 0-based indexes)."""

    id: str
    block: int
    job: int


class LogsReply(Struct, kw_only=True):
    """Reply of `wf.api.logs`: the job's status and the whole of its output that was kept (the last
    256 KiB of its latest attempt, secrets redacted; "" when it printed nothing or it has expired,
    a week after it was written). `kept` says whether the whole output was found."""

    id: str
    block: int
    job: int
    name: str
    status: str
    output: str
    kept: bool


MAX_COMMENT = 1024  # characters of an approval's or a denial's comment


class ApprovalRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of `wf.api.approve` and `wf.api.deny` (a denial needs a non-empty comment)."""

    id: str
    comment: Annotated[str, Meta(max_length=MAX_COMMENT)] = ""


# ---------------------------------------------------------------- replies


class SubmitReply(Struct, kw_only=True):
    id: str
    verdict: Literal["approved", "pending"]


class IdReply(Struct, kw_only=True):
    id: str


class JobStatus(Struct, kw_only=True):
    name: str
    desc: str
    args: dict[str, str]
    status: str = "not_started"
    error: str = ""
    # the last 4 KiB of what the job printed or received (exec, ssh, http), secrets redacted; the
    # whole of what was kept: `wf logs ID BLOCK JOB` (`wf.api.logs`)
    output: str = ""


class ApprovalStatus(Struct, kw_only=True):
    """One person's approval of a workflow (requireApproval): who, when (UTC ISO 8601), and why."""

    by: str
    at: str
    comment: str = ""


class BlockStatus(Struct, kw_only=True):
    desc: str
    status: str = "not_started"
    has_error: bool = False
    jobs: list[JobStatus] = []


class StatusResp(Struct, kw_only=True):
    id: str
    name: str
    desc: str
    verdict: str = "pending"
    reason: str = ""
    status: str = "not_started"
    had_errors: bool = False
    was_es_stopped: bool = False
    # who (the person the server authenticated, or `admin`): "" when not applicable or not recorded
    submitted_by: str = ""
    executed_by: str = ""
    cancelled_by: str = ""
    # requireApproval: the approvals given (each person once) and how many distinct people it needs
    # before exec (0: none needed); a denial makes the verdict `rejected`
    approvals: list[ApprovalStatus] = []
    approvals_needed: int = 0
    # pause and resume (`wf.api.pause` / `wf.api.resume`): who paused it while its status is `paused`
    # ("" otherwise); `pauses` and `resumes` count the requests (paused while pauses > resumes)
    paused_by: str = ""
    pauses: int = 0
    resumes: int = 0
    blocks: list[BlockStatus] = []


class BlockSummary(Struct, kw_only=True):
    desc: str
    status: str
    has_error: bool
    jobs: list[JobStatus] = []
    job_counts: dict[str, int] = {}


class StatusSummary(Struct, kw_only=True):
    """A StatusResp too large for one message: every field but the jobs, which each block counts
    by status instead (`jobs_omitted` says so). Per-job detail is in WF_EVENTS."""

    id: str
    name: str
    desc: str
    verdict: str
    reason: str
    status: str
    had_errors: bool
    was_es_stopped: bool
    blocks: list[BlockSummary]
    submitted_by: str = ""
    executed_by: str = ""
    cancelled_by: str = ""
    approvals: list[ApprovalStatus] = []
    approvals_needed: int = 0
    paused_by: str = ""
    pauses: int = 0
    resumes: int = 0
    jobs_omitted: bool = True


def summarise(status: StatusResp) -> StatusSummary:
    def counts(jobs: list[JobStatus]) -> dict[str, int]:
        out = dict.fromkeys(("not_started", "running", "completed", "failed"), 0)
        for job in jobs:
            out[job.status] = out.get(job.status, 0) + 1
        return out

    return StatusSummary(
        id=status.id, name=status.name, desc=status.desc, verdict=status.verdict, reason=status.reason,
        status=status.status, had_errors=status.had_errors, was_es_stopped=status.was_es_stopped,
        submitted_by=status.submitted_by, executed_by=status.executed_by, cancelled_by=status.cancelled_by,
        approvals=status.approvals, approvals_needed=status.approvals_needed,
        paused_by=status.paused_by, pauses=status.pauses, resumes=status.resumes,
        blocks=[BlockSummary(desc=b.desc, status=b.status, has_error=b.has_error, job_counts=counts(b.jobs))
                for b in status.blocks],
    )


class _OmitsJobs(Struct):
    jobs_omitted: bool = False


_omits_jobs_decoder = msgspec.json.Decoder(_OmitsJobs)


def omits_jobs(status_json: bytes) -> bool:
    """Whether a stored StatusResp is a StatusSummary (its jobs omitted)."""
    return _omits_jobs_decoder.decode(status_json).jobs_omitted


# ---------------------------------------------------------------- events (stream WF_EVENTS)


class _Event(Struct, frozen=True, kw_only=True, tag_field="type"):
    id: str
    at: float  # unix seconds, when the publisher decided it


class StoredReq(Struct, frozen=True, kw_only=True):
    """Where a WorkReq too large for one message is kept: an object in the object store."""

    bucket: str
    object: str
    bytes: int
    sha256: str  # of the stored JSON
    workreq: str  # the WorkReq's name, readable without fetching it


class Submitted(_Event, frozen=True, tag="submitted"):
    """Carries the WorkReq itself, or (when the event would exceed the server's max payload) where
    it is stored: `services.workreqs.load` gives the WorkReq either way."""

    req: WorkReq | None = None
    req_stored: StoredReq | None = None
    by: str = ""  # who submitted it (services/common/identity.py); "" in events older than this field

    @property
    def workreq_name(self) -> str:
        if self.req is not None:
            return self.req.name
        return self.req_stored.workreq if self.req_stored is not None else ""


class Approved(_Event, frozen=True, tag="approved"):
    """The policies passed. `approvals_needed` > 0 (the requireApproval policy): exec waits for that many
    distinct people, none of them the submitter, of at least `approver_role`, to approve (0 and "" in
    events older than these fields: no approval needed)."""

    approvals_needed: int = 0
    approver_role: str = ""


class Approval(_Event, frozen=True, tag="approval"):
    """A person approved the workflow (`wf.api.approve`); on `wf.evt.<id>.approval.<by>`, one per person."""

    by: str
    comment: str = ""


class Denied(_Event, frozen=True, tag="denied"):
    """A person denied the workflow (`wf.api.deny`): it ends rejected, never to be executed."""

    by: str
    comment: str


class Rejected(_Event, frozen=True, tag="rejected"):
    reason: str


class ExecRequested(_Event, frozen=True, tag="exec_requested"):
    by: str = ""  # who asked (services/common/identity.py); "" in events older than this field


class CancelRequested(_Event, frozen=True, tag="cancel_requested"):
    """`wf.api.cancel`: stop this one workflow as an emergency stop would."""

    by: str = ""  # who asked (services/common/identity.py); "" in events older than this field


class Paused(_Event, frozen=True, tag="paused"):
    """`wf.api.pause`: dispatch nothing new for this workflow until it is resumed; its running jobs
    finish. `n` numbers the workflow's pauses (1, 2, ...): paused while the highest `n` paused is above
    the highest resumed, whatever order the events are read in."""

    n: int
    by: str = ""


class Resumed(_Event, frozen=True, tag="resumed"):
    """`wf.api.resume`: ends pause number `n`; dispatch goes on where it stopped."""

    n: int
    by: str = ""


class WorkflowStarted(_Event, frozen=True, tag="workflow.started"):
    pass


class WorkflowEnded(_Event, frozen=True, tag="workflow.ended"):
    status: Literal["completed", "failed"]
    had_errors: bool = False
    was_es_stopped: bool = False
    # why it stopped early: "" (it ran to its end), "fatal", "max_failures", "es", "cancel"
    stopped_by: str = ""


class BlockStarted(_Event, frozen=True, tag="block.started"):
    block: int


class BlockEnded(_Event, frozen=True, tag="block.ended"):
    block: int
    status: Literal["completed", "failed"]
    has_error: bool = False


class JobStarted(_Event, frozen=True, tag="job.started"):
    block: int
    job: int
    attempt: int = 1


class JobCompleted(_Event, frozen=True, tag="job.completed"):
    block: int
    job: int
    attempt: int = 1
    output: str = ""  # the last 4 KiB of the job's output, secrets redacted


# A failed job's `error` when a runner cancelled it because its WorkReq name is emergency-stopped: the
# executor takes it as the stop itself (the runner may have seen it first).
ES_CANCELLED = "cancelled: emergency stop"


class JobFailed(_Event, frozen=True, tag="job.failed", kw_only=True):
    block: int
    job: int
    attempt: int = 1
    error: str
    fatal: bool = False
    retrying: bool = False  # this attempt failed with a retryable error; another attempt follows
    output: str = ""  # the last 4 KiB of this attempt's output, secrets redacted


Event = (
    Submitted
    | Approved
    | Rejected
    | ExecRequested
    | CancelRequested
    | Paused
    | Resumed
    | Approval
    | Denied
    | WorkflowStarted
    | WorkflowEnded
    | BlockStarted
    | BlockEnded
    | JobStarted
    | JobCompleted
    | JobFailed
)
JobEvent = JobStarted | JobCompleted | JobFailed


def event_subject(ev: Event) -> str:
    """The subject an event is published on: `wf.evt.<id>.<event>` (contract)."""
    match ev:
        case WorkflowEnded():
            return subjects.workflow_state(ev.id, ev.status)
        case WorkflowStarted():
            return subjects.workflow_state(ev.id, "started")
        case BlockStarted():
            return subjects.block_state(ev.id, ev.block, "started")
        case BlockEnded():
            return subjects.block_state(ev.id, ev.block, ev.status)
        case JobStarted():
            return subjects.job_event(ev.id, ev.block, ev.job, "started")
        case JobCompleted():
            return subjects.job_event(ev.id, ev.block, ev.job, "completed")
        case JobFailed():
            return subjects.job_event(ev.id, ev.block, ev.job, "failed")
        case Approval():
            return subjects.approval(ev.id, ev.by)
        case _:
            return subjects.event(ev.id, str(ev.__struct_config__.tag))


def event_msg_id(ev: Event) -> str:
    """Deterministic `Nats-Msg-Id`: a republished event (retry, takeover) is dropped as a duplicate.

    A job's `started` (and a retried attempt's `failed`) carries the attempt, so each attempt shows;
    its terminal event does not, so a job run twice still records one outcome."""
    subject = event_subject(ev)
    if isinstance(ev, JobStarted) or (isinstance(ev, JobFailed) and ev.retrying):
        return f"{subject}.{ev.attempt}"
    if isinstance(ev, Paused | Resumed):  # pause, resume, pause again: each its own message
        return f"{subject}.{ev.n}"
    return subject


# ---------------------------------------------------------------- commands (stream WF_JOBS)


class JobCommand(Struct, frozen=True, kw_only=True):
    id: str
    block: int
    job: int
    name: str
    args: dict[str, str]
    at: float
    workreq: str = ""  # the WorkReq's name, so runners can honour its emergency stop




# ---------------------------------------------------------------- codecs (reused, never rebuilt)

# What decoding outside input can raise: msgspec raises UnicodeDecodeError, not DecodeError, for
# invalid UTF-8 inside a JSON string. Catch this, never msgspec.DecodeError alone.
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError)

encoder = msgspec.json.Encoder()
event_decoder = msgspec.json.Decoder(Event)
workreq_decoder = msgspec.json.Decoder(WorkReq)
id_request_decoder = msgspec.json.Decoder(IdRequest)
logs_request_decoder = msgspec.json.Decoder(LogsRequest)
approval_request_decoder = msgspec.json.Decoder(ApprovalRequest)
status_decoder = msgspec.json.Decoder(StatusResp)
command_decoder = msgspec.json.Decoder(JobCommand)
