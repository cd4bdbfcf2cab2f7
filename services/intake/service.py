"""wf-intake at run time.

Submit records a `submitted` event and waits a short while for the policy's verdict. Exec records an
`exec_requested` event with `Nats-Expected-Last-Subject-Sequence: 0`, so JetStream itself lets exactly
one of any number of concurrent execs of an id through, whichever intake replica serves it.

A submit carrying a `Nats-Msg-Id` header is idempotent for 24 hours: the key (hashed) is claimed in
KV `wf_idempotency` with create-if-absent before anything is stored, so however many submits carry
it, concurrently or a day apart, through any intake replica, they share one workflow id; the
`submitted` event itself is written with `Nats-Expected-Last-Subject-Sequence: 0`, so that workflow
has one submission even when two of them race to write it (or a retry finds the first attempt
died between the claim and the write)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time

import nats.errors
import nats.js.errors
import nats.micro
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from nats.micro.request import Request

from schemas import (
    DECODE_ERRORS,
    Approval,
    Approved,
    CancelRequested,
    Denied,
    ExecRequested,
    IdReply,
    Paused,
    Rejected,
    Resumed,
    SubmitReply,
    Submitted,
    WorkReq,
    approval_request_decoder,
    encoder,
    event_decoder,
    event_msg_id,
    event_subject,
    is_token,
    workreq_decoder,
)
from services.common import approvals
from services.common.bus import (
    ACK_TIMEOUT_S,
    MSG_ID,
    connect,
    kv_updates,
    last_event,
    publish_event,
    stored_verdict,
    wrong_last_sequence,
)
from services.common.endpoint import ApiError, ConcurrentEndpoint, decode_id
from services.common.es import EmergencyStops
from services.common.identity import Caller, caller
from services.common.ids import is_valid_id, new_id
from services.common.lifecycle import shutdown, start_micro, when_ready
from services.common.settings import VERSION, Settings
from services.common.strictjson import find_duplicate_key, workreq_duplicate_key
from services.common.topology import (
    CONFIG_BUCKET,
    ES_BUCKET,
    EVENTS_STREAM,
    IDEMPOTENCY_BUCKET,
    PEOPLE_BUCKET,
    UPLOADS_BUCKET,
)
from services.common.workreqs import HEADROOM, fits, max_body, store
from services.policy.config_watch import STATE_KEY as POLICY_STATE_KEY

from .es_gate import EsGate
from .limits import Limits, check_limits

log = structlog.get_logger()
IDEMPOTENCY_HEADER = "Nats-Msg-Id"
MAX_IDEMPOTENCY_KEY = 512
UPLOAD_HEADER = "Wf-Upload"  # an upload's id (letters, digits, - and _, at most 64)
PART_HEADER = "Wf-Upload-Part"  # on wf.api.upload: this part's index, from 0
PARTS_HEADER = "Wf-Upload-Parts"  # on wf.api.submit: how many parts make the WorkReq
MAX_PARTS = 4096


class Uploads:
    """WorkReqs sent in parts (each below the server's max payload) to `wf.api.upload`, kept in KV
    `wf_uploads` for an hour: `upload.part` -> bytes. Re-sending a part overwrites it (idempotent)."""

    def __init__(self, kv: KeyValue, nc: Client) -> None:
        self.kv = kv
        self.nc = nc

    @staticmethod
    def _upload_id(headers: dict[str, str]) -> str:
        upload = headers.get(UPLOAD_HEADER, "")
        if not (0 < len(upload) <= 64 and is_token(upload)):
            raise ApiError(400, f"{UPLOAD_HEADER} must be 1-64 letters, digits, '-' or '_'")
        return upload

    @staticmethod
    def _count(headers: dict[str, str], name: str, low: int) -> int:
        try:
            value = int(headers.get(name, ""))
        except ValueError:
            raise ApiError(400, f"{name} must be a number") from None
        if not low <= value < MAX_PARTS + low:
            raise ApiError(400, f"{name} must be from {low} to {MAX_PARTS - 1 + low}")
        return value

    async def put(self, request: Request) -> bytes:
        headers = request.headers or {}
        upload = self._upload_id(headers)
        part = self._count(headers, PART_HEADER, 0)
        if not request.data:
            raise ApiError(400, f"part {part} of upload {upload} is empty")
        if not fits(self.nc.max_payload, len(request.data)):  # it must fit in KV with its headers
            raise ApiError(413, f"part {part} is {len(request.data)} bytes; parts may have at most "
                                f"{max_body(self.nc.max_payload)} (the server's max payload less {HEADROOM})")
        try:
            await self.kv.put(f"{upload}.{part}", request.data)
        except (TimeoutError, nats.errors.Error) as exc:
            raise ApiError(503, f"could not store part {part} of upload {upload}: {exc!r}") from None
        return json.dumps({"upload": upload, "part": part, "bytes": len(request.data)}).encode()

    async def assemble(self, headers: dict[str, str], max_bytes: int) -> bytes:
        """The whole WorkReq of a submit that names an upload."""
        upload = self._upload_id(headers)
        count = self._count(headers, PARTS_HEADER, 1)

        async def part(i: int) -> bytes:
            try:
                entry = await self.kv.get(f"{upload}.{i}")
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                raise ApiError(400, f"upload {upload} has no part {i} (never sent, or older than an hour)") from None
            except (TimeoutError, nats.errors.Error) as exc:
                raise ApiError(503, f"could not read upload {upload}: {exc!r}") from None
            return entry.value or b""

        parts: list[bytes] = []
        size = 0
        for first in range(0, count, 16):  # 16 at a time, stopping as soon as the total is over the limit
            group = await asyncio.gather(*(part(i) for i in range(first, min(count, first + 16))))
            parts += group
            size += sum(len(p) for p in group)
            if size > max_bytes:
                raise ApiError(413, f"the uploaded WorkReq is larger than the limit of {max_bytes} bytes (WF_MAX_REQUEST_BYTES)")
        return b"".join(parts)


class Idempotency:
    """Submit keys (a request's `Nats-Msg-Id`) -> the workflow they created, in KV for 24 hours."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def claim(self, key: str, wf_id: str, digest: str) -> tuple[str, bool]:
        """(the key's workflow id, whether this call claimed it). 409 if the key came with another body."""
        kv_key = hashlib.sha256(key.encode()).hexdigest()
        record = json.dumps({"id": wf_id, "sha256": digest}).encode()
        for _ in range(3):
            try:
                await self.kv.create(kv_key, record)
                return wf_id, True
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            except nats.js.errors.KeyNotFoundError:
                continue  # it expired between create's write and its look-up: claim it afresh
            try:
                stored = json.loads((await self.kv.get(kv_key)).value or b"{}")
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                continue  # expired between the two calls: claim it afresh
            if stored.get("sha256") != digest:
                raise ApiError(409, f"{IDEMPOTENCY_HEADER} {key!r} was used for a different WorkReq "
                                    f"(workflow {stored.get('id')}); use a new key for a new request")
            return str(stored["id"]), False
        raise ApiError(503, f"could not claim {IDEMPOTENCY_HEADER} {key!r}, nothing was stored")


class VerdictWaiters:
    """Futures for submits waiting on their verdict, fed by one subscription to all verdicts
    (several per id: concurrent submits with one idempotency key wait for the same workflow)."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[Msg]]] = {}

    async def subscribe(self, nc: Client) -> None:
        for verdict in ("approved", "rejected"):
            await nc.subscribe(f"wf.evt.*.{verdict}", cb=self._on_verdict)
        await nc.flush()
        await nc.flush()  # one flush can be overtaken by queued commands (nats-notes)

    async def _on_verdict(self, msg: Msg) -> None:
        wf_id = msg.subject.split(".")[2]
        for fut in self._waiting.get(wf_id, ()):
            if not fut.done():
                fut.set_result(msg)

    def expect(self, wf_id: str) -> asyncio.Future[Msg]:
        fut = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(wf_id, []).append(fut)
        return fut

    def forget(self, wf_id: str, fut: asyncio.Future[Msg]) -> None:
        waiting = self._waiting.get(wf_id, [])
        if fut in waiting:
            waiting.remove(fut)
        if not waiting:
            self._waiting.pop(wf_id, None)


class PolicyConfigState:
    """Whether the policy configuration is usable, as wf-policy last wrote it to KV `wf_config`."""

    def __init__(self) -> None:
        self.error = ""

    async def follow(self, kv: KeyValue, stop: asyncio.Event) -> None:
        async for entry in kv_updates(kv, stop, POLICY_STATE_KEY):
            if entry is None or not entry.value:
                continue
            try:
                state = json.loads(entry.value)
                self.error = "" if state.get("ok") else str(state.get("error", "invalid"))
            except (ValueError, AttributeError):
                log.warning("bad_policy_state_ignored")


class PeopleRoles:
    """Each person's role, as KV `wf_people` says (written by `wf up` and `wf user`): who may approve
    what (services/common/approvals.py). A person missing from it is a client; a request from inside
    WF is an admin's."""

    def __init__(self) -> None:
        self.roles: dict[str, str] = {}
        self.ready = asyncio.Event()

    def role_of(self, who: Caller) -> str:
        if not who.person:
            return "admin"
        return self.roles.get(who.name, approvals.DEFAULT_ROLE)

    async def follow(self, kv: KeyValue, stop: asyncio.Event) -> None:
        async for entry in kv_updates(kv, stop):
            if entry is None:
                self.ready.set()
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.roles.pop(entry.key, None)
            else:
                self.roles[entry.key] = entry.value.decode(errors="replace").strip()


MAX_APPROVAL_EVENTS = 1000  # approvals read per workflow at most (each person once; far above any need)


def decode_approval(data: bytes, deny: bool) -> tuple[str, str]:
    """(id, comment) of an `{"id": ID, "comment": "..."}` request; 400 for a bad body, 404 for what
    cannot be an id. A denial needs a comment."""
    shape = '{"id": ID, "comment": "why"}'
    try:
        body = approval_request_decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise ApiError(400, f"request must be JSON {shape}: {exc}") from None
    duplicate = find_duplicate_key(data)
    if duplicate:
        raise ApiError(400, f"request must be JSON {shape}: {duplicate}")
    if not is_valid_id(body.id):
        raise ApiError(404, f"unknown id {body.id!r}")
    comment = " ".join(body.comment.split())
    if deny and not comment:
        raise ApiError(400, "a denial needs a comment saying why: {\"id\": ID, \"comment\": \"why\"}")
    return body.id, comment


class Intake:
    def __init__(
        self, nc: Client, settings: Settings, waiters: VerdictWaiters, policy_state: PolicyConfigState,
        es: EmergencyStops, limits: Limits, idempotency: Idempotency, uploads: Uploads,
        people: PeopleRoles | None = None,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.uploads = uploads
        self.idempotency = idempotency
        self.settings = settings
        self.waiters = waiters
        self.policy_state = policy_state
        self.es = es
        self.limits = limits
        self.people = people or PeopleRoles()

    def _check_not_stopped(self, workreq: str) -> None:
        """423 unless the name's emergency stop is `go`: `pause` refuses new work as `stop` does
        (the contract's 423 is "not go"), while the workflows already running wait to resume."""
        if not self.es.is_go(workreq):
            state = self.es.state(workreq)
            raise ApiError(423, f"emergency stop is not 'go' for {workreq!r}" + (" (it is 'pause')" if state == "pause" else ""))

    async def _body(self, request: Request) -> bytes:
        """The WorkReq's bytes: the request's body, or the upload its headers name."""
        headers = request.headers or {}
        if UPLOAD_HEADER in headers:
            if request.data:
                raise ApiError(400, f"a submit naming an upload ({UPLOAD_HEADER}) must have an empty body")
            return await self.uploads.assemble(headers, self.limits.max_request_bytes)
        if len(request.data) > self.limits.max_request_bytes:
            raise ApiError(413, f"the request is {len(request.data)} bytes, over the limit of "
                                f"{self.limits.max_request_bytes} (WF_MAX_REQUEST_BYTES)")
        return request.data

    async def submit(self, request: Request) -> bytes:
        data = await self._body(request)
        try:
            req = workreq_decoder.decode(data)
        except DECODE_ERRORS as exc:
            raise ApiError(400, f"not a valid WorkReq: {exc}") from None
        too_much = check_limits(req, self.limits)
        if too_much:
            raise ApiError(400, f"WorkReq too large: {too_much}")
        req_json = encoder.encode(req)
        duplicate = workreq_duplicate_key(data, req, req_json)
        if duplicate:  # msgspec keeps the last value of a repeated key: what the submitter meant is unclear
            raise ApiError(400, f"not a valid WorkReq: {duplicate}")
        key = (request.headers or {}).get(IDEMPOTENCY_HEADER, "")
        if len(key) > MAX_IDEMPOTENCY_KEY:
            raise ApiError(400, f"{IDEMPOTENCY_HEADER} is longer than {MAX_IDEMPOTENCY_KEY} characters")
        wf_id, fresh = new_id(), True
        if key:
            try:
                wf_id, fresh = await self.idempotency.claim(key, wf_id, hashlib.sha256(data).hexdigest())
            except (TimeoutError, nats.errors.Error) as exc:
                raise ApiError(503, f"could not claim {IDEMPOTENCY_HEADER}, nothing was stored: {exc!r}") from None
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        verdict = self.waiters.expect(wf_id)
        try:
            if not fresh and await self._stored_verdict(wf_id, verdict):
                log.info("submit_repeated", outcome="same_workflow")  # a retry: the workflow exists
            else:
                await self._record_submission(wf_id, req, req_json, once=bool(key), by=caller(request.headers).name)
            try:
                msg = await asyncio.wait_for(verdict, timeout=self.settings.verdict_wait_s)
            except TimeoutError:
                return encoder.encode(SubmitReply(id=wf_id, verdict="pending"))
        finally:
            self.waiters.forget(wf_id, verdict)
        ev = event_decoder.decode(msg.data)
        if isinstance(ev, Rejected):
            raise ApiError(400, ev.reason, id=wf_id, verdict="rejected")
        return encoder.encode(SubmitReply(id=wf_id, verdict="approved"))

    async def _stored_verdict(self, wf_id: str, verdict: asyncio.Future[Msg]) -> bool:
        """For a repeated key: whether its workflow is stored; its verdict, if any, resolves `verdict`."""
        try:
            if await last_event(self.js, f"wf.evt.{wf_id}.submitted") is None:
                return False
            decided = await stored_verdict(self.js, wf_id)
            if decided is not None and not verdict.done():
                verdict.set_result(decided)
        except (TimeoutError, nats.errors.Error) as exc:
            raise ApiError(503, f"could not read workflow {wf_id} of this {IDEMPOTENCY_HEADER}: {exc!r}") from None
        return True

    async def _record_submission(self, wf_id: str, req: WorkReq, req_json: bytes, once: bool, by: str) -> None:
        if self.policy_state.error:
            raise ApiError(503, f"policy configuration invalid, nothing was stored: {self.policy_state.error}")
        self._check_not_stopped(req.name)
        headers = {"Nats-Expected-Last-Subject-Sequence": "0"} if once else None
        try:
            await publish_event(self.js, await self._submitted(wf_id, req, req_json, by), headers=headers)
        except nats.js.errors.APIError as exc:
            if once and wrong_last_sequence(exc):
                return  # a concurrent submit with the same key wrote it first: one workflow
            raise ApiError(503, f"could not record the submission, nothing was stored: {exc.description}") from None
        except (TimeoutError, nats.errors.Error) as exc:  # no ack: it may or may not be stored
            retry = f"retry with the same {IDEMPOTENCY_HEADER} to be sure" if once else f"send a {IDEMPOTENCY_HEADER} to retry safely"
            raise ApiError(503, f"the submission was not acknowledged ({exc!r}); {retry}") from None

    async def _submitted(self, wf_id: str, req: WorkReq, req_json: bytes, by: str) -> Submitted:
        """The event; when it would exceed the server's max payload, the WorkReq goes to the object
        store first and the event says where (services/common/workreqs.py)."""
        ev = Submitted(id=wf_id, at=time.time(), req=req, by=by)
        if fits(self.nc.max_payload, len(req_json) + 256 + len(by)):
            return ev
        stored = await store(self.js, wf_id, req_json, req.name, self.nc.max_payload)
        log.info("workreq_stored", bucket=stored.bucket, bytes=stored.bytes)
        return Submitted(id=wf_id, at=ev.at, req_stored=stored, by=by)

    async def exec(self, request: Request) -> bytes:
        wf_id = decode_id(request.data)
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        needs_approval = False
        try:
            needs_approval = await self._check_executable(wf_id)
            ev = ExecRequested(id=wf_id, at=time.time(), by=caller(request.headers).name)
            if not needs_approval:
                await publish_event(self.js, ev, headers={"Nats-Expected-Last-Subject-Sequence": "0"})
            else:
                # Under requireApproval JetStream refuses the exec once a denial is stored (and the
                # denial once an exec is: never both). One exec: its Nats-Msg-Id makes a concurrent
                # second one a duplicate, refused here; a later one meets the check above.
                headers = {"Nats-Expected-Last-Subject-Sequence": "0",
                           "Nats-Expected-Last-Subject-Sequence-Subject": f"wf.evt.{wf_id}.denied",
                           MSG_ID: event_msg_id(ev)}
                ack = await self.js.publish(event_subject(ev), encoder.encode(ev), timeout=ACK_TIMEOUT_S,
                                            headers=headers)
                if ack.duplicate:
                    raise ApiError(409, f"workflow {wf_id} is already executing or executed")
        except nats.js.errors.APIError as exc:
            if wrong_last_sequence(exc) and needs_approval:
                raise ApiError(412, f"workflow {wf_id} was denied") from None
            if wrong_last_sequence(exc):
                raise ApiError(409, f"workflow {wf_id} is already executing or executed") from None
            raise ApiError(503, f"could not record the exec request: {exc.description}") from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise ApiError(503, f"could not record the exec request: {exc!r}") from None
        return encoder.encode(IdReply(id=wf_id))

    async def _submission(self, wf_id: str) -> Submitted:
        msg = await last_event(self.js, f"wf.evt.{wf_id}.submitted")
        if msg is None:
            raise ApiError(404, f"unknown id {wf_id!r}")
        ev = event_decoder.decode(msg.data)
        assert isinstance(ev, Submitted)
        return ev

    async def _check_executable(self, wf_id: str) -> bool:
        """Whether exec may go ahead (else ApiError); True when it needed approvals (requireApproval)."""
        submitted = await self._submission(wf_id)
        if await last_event(self.js, f"wf.evt.{wf_id}.exec_requested") is not None:
            raise ApiError(409, f"workflow {wf_id} is already executing or executed")
        if await last_event(self.js, f"wf.evt.{wf_id}.cancel_requested") is not None:
            raise ApiError(409, f"workflow {wf_id} was cancelled")
        self._check_not_stopped(submitted.workreq_name)
        approved_msg = await last_event(self.js, f"wf.evt.{wf_id}.approved")
        if approved_msg is None:
            rejected = await last_event(self.js, f"wf.evt.{wf_id}.rejected")
            if rejected is not None:
                reason = event_decoder.decode(rejected.data).reason  # type: ignore[union-attr]
                raise ApiError(412, f"workflow {wf_id} was rejected: {reason}")
            raise ApiError(412, f"workflow {wf_id} is not approved (verdict pending)")
        age_s = time.time() - submitted.at
        if age_s > self.settings.exec_window_s:
            raise ApiError(
                412, f"workflow {wf_id} was submitted {age_s:.0f} s ago, past the exec window of {self.settings.exec_window_s:.0f} s"
            )
        approved = event_decoder.decode(approved_msg.data)
        if isinstance(approved, Approved) and approved.approvals_needed > 0:
            # only such a workflow can be denied: an exec of any other costs no look-up more
            denied = await self._denial(wf_id)
            if denied is not None:
                raise ApiError(412, f"workflow {wf_id} was denied by {denied.by}: {denied.comment}")
            requirement = approvals.Requirement(approved.approvals_needed, approved.approver_role)
            have = len(await self._counted_approvals(wf_id, submitted))
            if have < requirement.approvers:
                raise ApiError(412, approvals.missing_message(wf_id, have, requirement.approvers, requirement))
            return True
        return False

    # ------------------------------------------------------------ the two-person rule (requireApproval)

    async def _denial(self, wf_id: str) -> Denied | None:
        msg = await last_event(self.js, f"wf.evt.{wf_id}.denied")
        if msg is None:
            return None
        ev = event_decoder.decode(msg.data)
        return ev if isinstance(ev, Denied) else None

    async def _approvals(self, wf_id: str, after_seq: int) -> list[approvals.GivenApproval]:
        """Every approval event of a workflow (stored after its submission), in stream order."""
        found: list[approvals.GivenApproval] = []
        seq = after_seq + 1
        for _ in range(MAX_APPROVAL_EVENTS):
            try:
                msg = await self.js.get_msg(EVENTS_STREAM, seq=seq, subject=f"wf.evt.{wf_id}.approval.*",
                                            direct=True, next=True)
            except nats.js.errors.NotFoundError:
                break
            ev = event_decoder.decode(msg.data or b"")
            if isinstance(ev, Approval):
                found.append(approvals.GivenApproval(ev.by, ev.at, ev.comment))
            seq = msg.seq + 1
        return found

    async def _counted_approvals(self, wf_id: str, submitted: Submitted) -> list[approvals.GivenApproval]:
        submitted_msg = await last_event(self.js, f"wf.evt.{wf_id}.submitted")
        after = submitted_msg.seq if submitted_msg is not None and submitted_msg.seq else 0
        return approvals.counted(await self._approvals(wf_id, after), submitted.by, time.time(),
                                 self.settings.exec_window_s)

    async def _awaiting_approval(self, wf_id: str, what: str) -> tuple[Submitted, Approved]:
        """The submission and verdict of a workflow that waits for approvals; 404 unknown, 409 when
        there is nothing to approve or deny (no approval needed, not approved, denied, executing,
        executed, cancelled)."""
        submitted = await self._submission(wf_id)
        if await self._denial(wf_id) is not None:
            raise ApiError(409, f"workflow {wf_id} was denied; nothing to {what}")
        if await last_event(self.js, f"wf.evt.{wf_id}.exec_requested") is not None:
            raise ApiError(409, f"workflow {wf_id} is already executing or executed; nothing to {what}")
        if await last_event(self.js, f"wf.evt.{wf_id}.cancel_requested") is not None:
            raise ApiError(409, f"workflow {wf_id} was cancelled; nothing to {what}")
        approved_msg = await last_event(self.js, f"wf.evt.{wf_id}.approved")
        if approved_msg is None:
            rejected = await last_event(self.js, f"wf.evt.{wf_id}.rejected")
            state = "was rejected" if rejected is not None else "is not approved by the policies yet (verdict pending)"
            raise ApiError(409, f"workflow {wf_id} {state}; nothing to {what}")
        approved = event_decoder.decode(approved_msg.data)
        if not isinstance(approved, Approved) or approved.approvals_needed <= 0:
            raise ApiError(409, f"workflow {wf_id} needs no approval (no requireApproval policy for its name); "
                                f"nothing to {what}")
        return submitted, approved

    def _check_approver(self, wf_id: str, who: Caller, submitted: Submitted, approved: Approved, what: str) -> None:
        """403 unless the caller may approve (or deny) this workflow."""
        requirement = approvals.Requirement(approved.approvals_needed, approved.approver_role)
        if not is_token(who.name) or len(who.name) > 64:
            raise ApiError(403, f"an unidentified caller ({who.name}) may not {what} workflow {wf_id}")
        if what == "approve" and who.name == submitted.by:
            raise ApiError(403, f"you ({who.name}) submitted workflow {wf_id} and may not approve it yourself "
                                f"(requireApproval: {requirement.describe()}); ask another person")
        role = self.people.role_of(who)
        if not approvals.may_approve(role, requirement.role) and not (what == "deny" and who.name == submitted.by):
            raise ApiError(403, f"you ({who.name}) are a {role}; to {what} workflow {wf_id} takes the role "
                                f"{requirement.role} or above (requireApproval: {requirement.describe()}): "
                                f"use the credential of a person with that role")

    async def approve(self, request: Request) -> bytes:
        """`wf.api.approve` `{"id", "comment"}`: the caller's approval, an event of its own."""
        wf_id, comment = decode_approval(request.data, deny=False)
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        who = caller(request.headers)
        try:
            submitted, approved = await self._awaiting_approval(wf_id, "approve")
            self._check_approver(wf_id, who, submitted, approved, "approve")
            subject = f"wf.evt.{wf_id}.approval.{who.name}"
            previous = await last_event(self.js, subject)
            if previous is not None:
                earlier = event_decoder.decode(previous.data)
                if time.time() - earlier.at <= self.settings.exec_window_s:
                    raise ApiError(409, f"you ({who.name}) already approved workflow {wf_id}; an approval counts once "
                                        "per person")
            # one approval per person: a concurrent second one finds this subject taken (409)
            expected = {"Nats-Expected-Last-Subject-Sequence": str(previous.seq if previous is not None else 0)}
            await publish_event(self.js, Approval(id=wf_id, at=time.time(), by=who.name, comment=comment),
                                headers=expected)
            have = len(await self._counted_approvals(wf_id, submitted))
        except nats.js.errors.APIError as exc:
            if wrong_last_sequence(exc):
                raise ApiError(409, f"you ({who.name}) already approved workflow {wf_id}") from None
            raise ApiError(503, f"could not record the approval: {exc.description}") from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise ApiError(503, f"could not record the approval: {exc!r}") from None
        log.info("workflow_approved_by", by=who.name, approvals=have, approvals_needed=approved.approvals_needed)
        return encoder.encode({"id": wf_id, "approvals": have, "approvals_needed": approved.approvals_needed})

    async def deny(self, request: Request) -> bytes:
        """`wf.api.deny` `{"id", "comment"}`: the workflow ends rejected, never to run."""
        wf_id, comment = decode_approval(request.data, deny=True)
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        who = caller(request.headers)
        try:
            submitted, approved = await self._awaiting_approval(wf_id, "deny")
            self._check_approver(wf_id, who, submitted, approved, "deny")
            # refused by JetStream once an exec is stored: a workflow is never both denied and executed
            headers = {"Nats-Expected-Last-Subject-Sequence": "0",
                       "Nats-Expected-Last-Subject-Sequence-Subject": f"wf.evt.{wf_id}.exec_requested"}
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


    async def cancel(self, request: Request) -> bytes:
        """Stop one workflow as an emergency stop would (recorded as cancelled by request)."""
        wf_id = decode_id(request.data)
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        await self._submission(wf_id)
        for state in ("completed", "failed"):
            if await last_event(self.js, f"wf.evt.{wf_id}.workflow.{state}") is not None:
                raise ApiError(409, f"workflow {wf_id} already ended ({state})")
        try:
            await publish_event(self.js, CancelRequested(id=wf_id, at=time.time(), by=caller(request.headers).name))
        except (nats.errors.Error, TimeoutError) as exc:
            raise ApiError(503, f"could not record the cancel request: {exc!r}") from None
        return encoder.encode(IdReply(id=wf_id))


    # ------------------------------------------------------------ pause and resume one workflow

    async def _pause_state(self, wf_id: str, what: str) -> tuple[Msg | None, Msg | None, int, int]:
        """The workflow's last `paused` and `resumed` messages and their numbers, after checking that
        it runs: 404 unknown, 409 not executed, cancelled or ended."""
        await self._submission(wf_id)
        for state in ("completed", "failed"):
            if await last_event(self.js, f"wf.evt.{wf_id}.workflow.{state}") is not None:
                raise ApiError(409, f"workflow {wf_id} already ended ({state}); nothing to {what}")
        if await last_event(self.js, f"wf.evt.{wf_id}.exec_requested") is None:
            raise ApiError(409, f"workflow {wf_id} is not running (never executed); nothing to {what}")
        if await last_event(self.js, f"wf.evt.{wf_id}.cancel_requested") is not None:
            raise ApiError(409, f"workflow {wf_id} was cancelled; nothing to {what}")
        paused, resumed = await asyncio.gather(last_event(self.js, f"wf.evt.{wf_id}.paused"),
                                               last_event(self.js, f"wf.evt.{wf_id}.resumed"))
        n_paused = _number(paused)
        n_resumed = _number(resumed)
        return paused, resumed, n_paused, n_resumed

    async def _record_pause_event(self, ev: Paused | Resumed, previous: Msg | None, conflict: str) -> None:
        """One `paused` (or `resumed`) per number: a concurrent second one is a duplicate or finds
        the subject moved on (409 `conflict`)."""
        headers = {"Nats-Expected-Last-Subject-Sequence": str(previous.seq if previous is not None and previous.seq else 0),
                   MSG_ID: event_msg_id(ev)}
        try:
            ack = await self.js.publish(event_subject(ev), encoder.encode(ev), timeout=ACK_TIMEOUT_S, headers=headers)
        except nats.js.errors.APIError as exc:
            if wrong_last_sequence(exc):
                raise ApiError(409, conflict) from None
            raise ApiError(503, f"could not record it: {exc.description}") from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise ApiError(503, f"could not record it: {exc!r}") from None
        if ack.duplicate:
            raise ApiError(409, conflict)

    async def pause(self, request: Request) -> bytes:
        """`wf.api.pause` `{"id"}`: nothing new is dispatched for the workflow until it is resumed;
        its running jobs finish. A stop or cancel still ends it."""
        wf_id = decode_id(request.data)
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        who = caller(request.headers).name
        paused, _, n_paused, n_resumed = await self._pause_state(wf_id, "pause")
        if n_paused > n_resumed:
            by = getattr(event_decoder.decode(paused.data), "by", "") if paused is not None else ""
            raise ApiError(409, f"workflow {wf_id} is already paused" + (f" (by {by})" if by else ""))
        ev = Paused(id=wf_id, at=time.time(), n=n_paused + 1, by=who)
        await self._record_pause_event(ev, paused, f"workflow {wf_id} is already paused")
        log.info("workflow_paused_by", by=who, n=ev.n)
        return encoder.encode(IdReply(id=wf_id))

    async def resume(self, request: Request) -> bytes:
        """`wf.api.resume` `{"id"}`: dispatch goes on from where it stopped."""
        wf_id = decode_id(request.data)
        structlog.contextvars.bind_contextvars(workflow_id=wf_id)
        who = caller(request.headers).name
        _, resumed, n_paused, n_resumed = await self._pause_state(wf_id, "resume")
        if n_paused <= n_resumed:
            raise ApiError(409, f"workflow {wf_id} is not paused")
        ev = Resumed(id=wf_id, at=time.time(), n=n_paused, by=who)
        await self._record_pause_event(ev, resumed, f"workflow {wf_id} is not paused (resumed already)")
        log.info("workflow_resumed_by", by=who, n=ev.n)
        return encoder.encode(IdReply(id=wf_id))


def _number(msg: Msg | None) -> int:
    """The `n` of a stored `paused` or `resumed` event (0: none)."""
    if msg is None:
        return 0
    try:
        ev = event_decoder.decode(msg.data or b"")
    except DECODE_ERRORS:
        return 0
    return ev.n if isinstance(ev, Paused | Resumed) else 0


async def main(settings: Settings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, "wf-intake")
    js = nc.jetstream()
    waiters = VerdictWaiters()
    await waiters.subscribe(nc)
    policy_state = PolicyConfigState()
    config_kv = await when_ready(lambda: js.key_value(CONFIG_BUCKET), stop, what=CONFIG_BUCKET)
    follow_task = asyncio.create_task(policy_state.follow(config_kv, stop))
    es = EmergencyStops()
    await when_ready(lambda: js.key_value(ES_BUCKET), stop, what=ES_BUCKET)  # the bucket exists
    es_task = asyncio.create_task(es.follow(js, stop, ES_BUCKET))
    await es.ready.wait()
    await EsGate(nc).subscribe()  # people's emergency-stop writes, recorded with who made them
    idem_kv = await when_ready(lambda: js.key_value(IDEMPOTENCY_BUCKET), stop, what=IDEMPOTENCY_BUCKET)
    uploads = Uploads(await when_ready(lambda: js.key_value(UPLOADS_BUCKET), stop, what=UPLOADS_BUCKET), nc)
    people = PeopleRoles()
    people_kv = await when_ready(lambda: js.key_value(PEOPLE_BUCKET), stop, what=PEOPLE_BUCKET)
    people_task = asyncio.create_task(people.follow(people_kv, stop))
    try:
        await asyncio.wait_for(people.ready.wait(), 10)
    except TimeoutError:
        log.warning("people_roles_not_loaded", bucket=PEOPLE_BUCKET)  # until then, every person counts as a client
    intake = Intake(nc, settings, waiters, policy_state, es, Limits.from_env(dict(os.environ)), Idempotency(idem_kv),
                    uploads, people)
    # its STATS report the emergency stops it enforces: what `wf es show` prints
    service = await start_micro(nc, "wf-intake", VERSION, "takes WorkReqs and exec requests",
                                stats_handler=lambda endpoint: es.stats_data(endpoint.name))
    endpoints = [
        ConcurrentEndpoint("submit", intake.submit, settings.max_in_flight),
        ConcurrentEndpoint("exec", intake.exec, settings.max_in_flight),
        ConcurrentEndpoint("cancel", intake.cancel, settings.max_in_flight),
        ConcurrentEndpoint("upload", uploads.put, settings.max_in_flight),
        ConcurrentEndpoint("approve", intake.approve, settings.max_in_flight),
        ConcurrentEndpoint("deny", intake.deny, settings.max_in_flight),
        ConcurrentEndpoint("pause", intake.pause, settings.max_in_flight),
        ConcurrentEndpoint("resume", intake.resume, settings.max_in_flight),
    ]
    for ep in endpoints:
        await ep.register(service, f"wf.api.{ep.name}")
    await stop.wait()
    await follow_task
    await es_task
    await people_task
    await service.stop()
    for ep in endpoints:
        await ep.drain()
    await shutdown(nc)
