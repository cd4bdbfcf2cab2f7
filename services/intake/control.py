"""Exec, approve, deny, cancel, pause and resume: the requests that act on a stored workflow.

Each one reads the facts it needs from the workflow's events in WF_EVENTS (one round of concurrent
reads), lets rules.py decide (pure), then writes its event. What a decision cannot see, a concurrent
request writing in between, JetStream refuses at the write:

- exec is written with `Nats-Expected-Last-Subject-Sequence: 0`, so exactly one of any number of
  concurrent execs of an id gets through, whichever intake replica serves it; under requireApproval
  it is also refused once a denial is stored, and a denial once an exec is (never both);
- an approval has one subject per person, written against the sequence that person's last one had;
- a pause or a resume is numbered (`n`), and its `Nats-Msg-Id` and expected sequence keep it to one."""

from __future__ import annotations

import asyncio
import time
from typing import Literal, TypeVar

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.micro.request import Request

from schemas import (
    DECODE_ERRORS,
    Approval,
    Approved,
    CancelRequested,
    Denied,
    Event,
    ExecRequested,
    IdReply,
    Paused,
    Rejected,
    Resumed,
    Submitted,
    approval_request_decoder,
    encoder,
    event_decoder,
    subjects,
)
from services.common.bus import (
    EXPECTED_LAST_SEQ,
    EXPECTED_LAST_SEQ_SUBJECT,
    last_event,
    publish_event,
    wrong_last_sequence,
)
from services.common.endpoint import ApiError, decode_body, decode_id, known_form
from services.common.identity import Caller, caller
from services.common.settings import Settings
from services.common.topology import EVENTS_STREAM
from services.policy import approvals
from services.safety.stops import EmergencyStops

from .followers import PeopleRoles
from .rules import (
    ApprovalFacts,
    ExecFacts,
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
)

log = structlog.get_logger()
E = TypeVar("E", bound=Event)
MAX_APPROVAL_EVENTS = 1000  # approvals read per workflow at most (each person once; far above any need)


def decode_approval(data: bytes, deny: bool) -> tuple[str, str]:
    """(id, comment) of an `{"id": ID, "comment": "..."}` request; 400 for a bad body, 404 for what
    cannot be an id. A denial needs a comment."""
    body = decode_body(data, approval_request_decoder, '{"id": ID, "comment": "why"}')
    known_form(body.id)
    comment = " ".join(body.comment.split())
    if deny and not comment:
        raise ApiError(400, "a denial needs a comment saying why: {\"id\": ID, \"comment\": \"why\"}")
    return body.id, comment


# ------------------------------------------------------------ reading the facts


def decoded(msg: RawStreamMsg | None, kind: type[E]) -> E | None:
    """The event a stored message holds, if it is one of `kind`."""
    if msg is None:
        return None
    ev = event_decoder.decode(msg.data or b"")
    return ev if isinstance(ev, kind) else None


def _pause_number(msg: RawStreamMsg | None) -> tuple[int, str]:
    """The `n` and `by` of a stored `paused` or `resumed` event ((0, ""): none, or unreadable)."""
    if msg is None:
        return 0, ""
    try:
        ev = event_decoder.decode(msg.data or b"")
    except DECODE_ERRORS:
        return 0, ""
    return (ev.n, ev.by) if isinstance(ev, Paused | Resumed) else (0, "")


async def stored_approvals(js: JetStreamContext, wf_id: str, after_seq: int = 0) -> list[StoredApproval]:
    """Every approval event of a workflow stored after `after_seq`, in stream order."""
    found: list[StoredApproval] = []
    seq = after_seq + 1
    for _ in range(MAX_APPROVAL_EVENTS):
        try:
            msg = await js.get_msg(EVENTS_STREAM, seq=seq, subject=subjects.approval(wf_id, "*"), direct=True, next=True)
        except nats.js.errors.NotFoundError:
            break
        seq = msg.seq if msg.seq is not None else seq
        ev = event_decoder.decode(msg.data or b"")
        if isinstance(ev, Approval):
            found.append(StoredApproval(seq, approvals.GivenApproval(ev.by, ev.at, ev.comment)))
        seq += 1
    return found


async def last_stored_each(js: JetStreamContext, *on: str) -> list[RawStreamMsg | None]:
    """The last message stored on each of several event subjects (None where there is none), read at once."""
    return await asyncio.gather(*(last_event(js, subject) for subject in on))


async def exec_facts(js: JetStreamContext, wf_id: str) -> ExecFacts:
    """All an exec decides on: the workflow's last events read at once, then, only for a workflow
    whose verdict asks for approvals (requireApproval), those stored after its submission."""
    kinds = ("submitted", "exec_requested", "cancel_requested", "approved", "rejected", "denied")
    submitted, exec_requested, cancel_requested, approved, rejected, denied = await last_stored_each(
        js, *(subjects.event(wf_id, kind) for kind in kinds))
    verdict = decoded(approved, Approved)
    given = (await stored_approvals(js, wf_id, _seq(submitted))
             if submitted is not None and verdict is not None and needs_approval(verdict) else [])
    return ExecFacts(
        submitted=decoded(submitted, Submitted),
        submitted_seq=_seq(submitted),
        exec_requested=exec_requested is not None,
        cancel_requested=cancel_requested is not None,
        approved=verdict,
        rejected=decoded(rejected, Rejected),
        denied=decoded(denied, Denied),
        approvals=given,
    )


async def approval_facts(js: JetStreamContext, wf_id: str, approver: str | None) -> ApprovalFacts:
    """All an approval (`approver`: the caller) or a denial (None) decides on, read at once."""
    kinds = ("submitted", "denied", "exec_requested", "cancel_requested", "approved", "rejected")
    own = (subjects.approval(wf_id, approver),) if approver is not None else ()
    submitted, denied, exec_requested, cancel_requested, approved, rejected, *previous = await last_stored_each(
        js, *(subjects.event(wf_id, kind) for kind in kinds), *own)
    earlier = previous[0] if previous else None
    return ApprovalFacts(
        submitted=decoded(submitted, Submitted),
        submitted_seq=_seq(submitted),
        denied=decoded(denied, Denied) is not None,
        exec_requested=exec_requested is not None,
        cancel_requested=cancel_requested is not None,
        approved=decoded(approved, Approved),
        rejected=rejected is not None,
        previous_at=event_decoder.decode(earlier.data or b"").at if earlier is not None else None,
        previous_seq=_seq(earlier),
    )


async def run_facts(js: JetStreamContext, wf_id: str) -> RunFacts:
    """All a cancel, a pause or a resume decides on, read at once."""
    submitted, completed, failed, exec_requested, cancel_requested, paused, resumed = await last_stored_each(
        js, subjects.event(wf_id, "submitted"), subjects.workflow_state(wf_id, "completed"),
        subjects.workflow_state(wf_id, "failed"), *(subjects.event(wf_id, kind) for kind in
                                                    ("exec_requested", "cancel_requested", "paused", "resumed")))
    paused_n, paused_by = _pause_number(paused)
    resumed_n, _ = _pause_number(resumed)
    return RunFacts(
        known=submitted is not None,
        ended="completed" if completed is not None else "failed" if failed is not None else "",
        exec_requested=exec_requested is not None,
        cancel_requested=cancel_requested is not None,
        paused_n=paused_n,
        paused_by=paused_by,
        paused_seq=_seq(paused),
        resumed_n=resumed_n,
        resumed_seq=_seq(resumed),
    )


def _seq(msg: RawStreamMsg | None) -> int:
    """A stored message's stream sequence (0: none)."""
    return msg.seq or 0 if msg is not None else 0


# ------------------------------------------------------------ the requests


class Control:
    """The endpoints `wf.api.exec`, `approve`, `deny`, `cancel`, `pause` and `resume`."""

    def __init__(self, js: JetStreamContext, settings: Settings, es: EmergencyStops, people: PeopleRoles) -> None:
        self.js = js
        self.settings = settings
        self.es = es
        self.people = people

    async def exec(self, request: Request) -> bytes:
        """`wf.api.exec` `{"id"}`: the workflow runs (wf-executor takes its `exec_requested`)."""
        wf_id = decode_id(request.data)
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        approval_needed = False
        try:
            facts = await exec_facts(self.js, wf_id)
            name = facts.submitted.workreq_name if facts.submitted is not None else ""
            refuse(exec_refusal(wf_id, facts, self.es.state(name), time.time(), self.settings.exec_window_s))
            approval_needed = needs_approval(facts.approved)
            ev = ExecRequested(id=wf_id, at=time.time(), by=caller(request.headers).name)
            if not approval_needed:
                await publish_event(self.js, ev, headers={EXPECTED_LAST_SEQ: "0"})
            else:
                # Under requireApproval JetStream refuses the exec once a denial is stored (and the
                # denial once an exec is: never both). One exec: its Nats-Msg-Id makes a concurrent
                # second one a duplicate, refused here; a later one meets the check above.
                ack = await publish_event(self.js, ev, headers={
                    EXPECTED_LAST_SEQ: "0", EXPECTED_LAST_SEQ_SUBJECT: subjects.event(wf_id, "denied")})
                if ack.duplicate:
                    raise ApiError(409, f"workflow {wf_id} is already executing or executed")
        except nats.js.errors.APIError as exc:
            if wrong_last_sequence(exc) and approval_needed:
                raise ApiError(412, f"workflow {wf_id} was denied") from None
            if wrong_last_sequence(exc):
                raise ApiError(409, f"workflow {wf_id} is already executing or executed") from None
            raise ApiError(503, f"could not record the exec request: {exc.description}") from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise ApiError(503, f"could not record the exec request: {exc!r}") from None
        return encoder.encode(IdReply(id=wf_id))

    # ------------------------------------------------------------ the two-person rule (requireApproval)

    async def _approval_allowed(self, wf_id: str, who: Caller, what: Literal["approve", "deny"]) -> ApprovalFacts:
        """The facts of a workflow the caller may approve (or deny); else the refusal, raised."""
        facts = await approval_facts(self.js, wf_id, who.name if what == "approve" and identified(who.name) else None)
        refuse(approval_refusal(wf_id, facts, who, self.people.role_of(who), what, time.time(),
                                self.settings.exec_window_s))
        return facts

    async def approve(self, request: Request) -> bytes:
        """`wf.api.approve` `{"id", "comment"}`: the caller's approval, an event of its own."""
        wf_id, comment = decode_approval(request.data, deny=False)
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        who = caller(request.headers)
        try:
            facts = await self._approval_allowed(wf_id, who, "approve")
            assert facts.submitted is not None and facts.approved is not None  # else refused
            # one approval per person: a concurrent second one finds this subject taken (409)
            await publish_event(self.js, Approval(id=wf_id, at=time.time(), by=who.name, comment=comment),
                                headers={EXPECTED_LAST_SEQ: str(facts.previous_seq)})
            given = await stored_approvals(self.js, wf_id, facts.submitted_seq)
            have = len(counted_approvals(facts.submitted, facts.submitted_seq, given, time.time(),
                                         self.settings.exec_window_s))
        except nats.js.errors.APIError as exc:
            if wrong_last_sequence(exc):
                raise ApiError(409, f"you ({who.name}) already approved workflow {wf_id}") from None
            raise ApiError(503, f"could not record the approval: {exc.description}") from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise ApiError(503, f"could not record the approval: {exc!r}") from None
        needed = facts.approved.approvals_needed
        log.info("workflow_approved_by", by=who.name, approvals=have, approvals_needed=needed)
        return encoder.encode({"id": wf_id, "approvals": have, "approvals_needed": needed})

    async def deny(self, request: Request) -> bytes:
        """`wf.api.deny` `{"id", "comment"}`: the workflow ends rejected, never to run."""
        wf_id, comment = decode_approval(request.data, deny=True)
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        who = caller(request.headers)
        try:
            await self._approval_allowed(wf_id, who, "deny")
            # refused by JetStream once an exec is stored: a workflow is never both denied and executed
            headers = {EXPECTED_LAST_SEQ: "0", EXPECTED_LAST_SEQ_SUBJECT: subjects.event(wf_id, "exec_requested")}
            await publish_event(self.js, Denied(id=wf_id, at=time.time(), by=who.name, comment=comment),
                                headers=headers)
        except nats.js.errors.APIError as exc:
            if wrong_last_sequence(exc):
                raise ApiError(409, f"workflow {wf_id} is already executing or executed; nothing to deny") from None
            raise ApiError(503, f"could not record the denial: {exc.description}") from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise ApiError(503, f"could not record the denial: {exc!r}") from None
        log.info("workflow_denied_by", by=who.name)
        return encoder.encode(IdReply(id=wf_id))

    # ------------------------------------------------------------ cancel, pause and resume one workflow

    async def cancel(self, request: Request) -> bytes:
        """`wf.api.cancel` `{"id"}`: stop one workflow as an emergency stop would (recorded as
        cancelled by request)."""
        wf_id = decode_id(request.data)
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        refuse(cancel_refusal(wf_id, await run_facts(self.js, wf_id)))
        try:
            await publish_event(self.js, CancelRequested(id=wf_id, at=time.time(), by=caller(request.headers).name))
        except (nats.errors.Error, TimeoutError) as exc:
            raise ApiError(503, f"could not record the cancel request: {exc!r}") from None
        return encoder.encode(IdReply(id=wf_id))

    async def pause(self, request: Request) -> bytes:
        """`wf.api.pause` `{"id"}`: nothing new is dispatched for the workflow until it is resumed;
        its running jobs finish. A stop or cancel still ends it."""
        wf_id = decode_id(request.data)
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        who = caller(request.headers).name
        facts = await run_facts(self.js, wf_id)
        refuse(pause_refusal(wf_id, facts, "pause"))
        ev = Paused(id=wf_id, at=time.time(), n=facts.paused_n + 1, by=who)
        await self._record_pause_event(ev, facts.paused_seq, f"workflow {wf_id} is already paused")
        log.info("workflow_paused_by", by=who, n=ev.n)
        return encoder.encode(IdReply(id=wf_id))

    async def resume(self, request: Request) -> bytes:
        """`wf.api.resume` `{"id"}`: dispatch goes on from where it stopped."""
        wf_id = decode_id(request.data)
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        who = caller(request.headers).name
        facts = await run_facts(self.js, wf_id)
        refuse(pause_refusal(wf_id, facts, "resume"))
        ev = Resumed(id=wf_id, at=time.time(), n=facts.paused_n, by=who)
        await self._record_pause_event(ev, facts.resumed_seq, f"workflow {wf_id} is not paused (resumed already)")
        log.info("workflow_resumed_by", by=who, n=ev.n)
        return encoder.encode(IdReply(id=wf_id))

    async def _record_pause_event(self, ev: Paused | Resumed, previous_seq: int, conflict: str) -> None:
        """One `paused` (or `resumed`) per number: a concurrent second one is a duplicate or finds
        the subject moved on (409 `conflict`). `previous_seq`: where the subject's last one is (0: none)."""
        try:
            ack = await publish_event(self.js, ev, headers={EXPECTED_LAST_SEQ: str(previous_seq)})
        except nats.js.errors.APIError as exc:
            if wrong_last_sequence(exc):
                raise ApiError(409, conflict) from None
            raise ApiError(503, f"could not record it: {exc.description}") from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise ApiError(503, f"could not record it: {exc!r}") from None
        if ack.duplicate:
            raise ApiError(409, conflict)
