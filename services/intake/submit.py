"""Submit: a WorkReq (in the request's body, or uploaded in parts) becomes a `submitted` event, and
the reply waits a short while for the policy's verdict.

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
import time

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.micro.request import Request

from schemas import (
    DECODE_ERRORS,
    Rejected,
    SubmitReply,
    Submitted,
    WorkReq,
    encoder,
    event_decoder,
    is_token,
    subjects,
    workreq_decoder,
)
from services.common.bus import EXPECTED_LAST_SEQ, last_event, publish_event, stored_verdict, wrong_last_sequence
from services.common.endpoint import ApiError
from services.common.identity import caller
from services.common.ids import new_id
from services.common.settings import Settings
from services.common.strictjson import workreq_duplicate_key
from services.safety.stops import EmergencyStops
from services.workreqs import HEADROOM, fits, max_body, store

from .followers import PolicyConfigState, VerdictWaiters
from .rules import refuse, stop_refusal
from .workreq_limits import Limits, check_limits

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



class Submits:
    """The endpoint `wf.api.submit` (`wf.api.upload` is `Uploads.put`)."""

    def __init__(
        self, nc: Client, js: JetStreamContext, settings: Settings, limits: Limits, waiters: VerdictWaiters,
        policy_state: PolicyConfigState, es: EmergencyStops, idempotency: Idempotency, uploads: Uploads,
    ) -> None:
        self.nc = nc
        self.js = js
        self.settings = settings
        self.limits = limits
        self.waiters = waiters
        self.policy_state = policy_state
        self.es = es
        self.idempotency = idempotency
        self.uploads = uploads

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
        """`wf.api.submit` (a WorkReq): its id and the verdict, or `pending` when the policy did not
        decide within WF_VERDICT_WAIT_S."""
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
                verdict_data = await asyncio.wait_for(verdict, timeout=self.settings.verdict_wait_s)
            except TimeoutError:
                return encoder.encode(SubmitReply(id=wf_id, verdict="pending"))
        finally:
            self.waiters.forget(wf_id, verdict)
        ev = event_decoder.decode(verdict_data)
        if isinstance(ev, Rejected):
            raise ApiError(400, ev.reason, id=wf_id, verdict="rejected")
        return encoder.encode(SubmitReply(id=wf_id, verdict="approved"))

    async def _stored_verdict(self, wf_id: str, verdict: asyncio.Future[bytes]) -> bool:
        """For a repeated key: whether its workflow is stored; its verdict, if any, resolves `verdict`."""
        try:
            if await last_event(self.js, subjects.event(wf_id, "submitted")) is None:
                return False
            decided = await stored_verdict(self.js, wf_id)
            if decided is not None and not verdict.done():
                verdict.set_result(decided.data or b"")
        except (TimeoutError, nats.errors.Error) as exc:
            raise ApiError(503, f"could not read workflow {wf_id} of this {IDEMPOTENCY_HEADER}: {exc!r}") from None
        return True

    async def _record_submission(self, wf_id: str, req: WorkReq, req_json: bytes, once: bool, by: str) -> None:
        if self.policy_state.error:
            raise ApiError(503, f"policy configuration invalid, nothing was stored: {self.policy_state.error}")
        refuse(stop_refusal(req.name, self.es.state(req.name)))
        headers = {EXPECTED_LAST_SEQ: "0"} if once else None
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
        store first and the event says where (services/workreqs.py)."""
        ev = Submitted(id=wf_id, at=time.time(), req=req, by=by)
        if fits(self.nc.max_payload, len(req_json) + 256 + len(by)):
            return ev
        stored = await store(self.js, wf_id, req_json, req.name, self.nc.max_payload)
        log.info("workreq_stored", bucket=stored.bucket, bytes=stored.bytes)
        return Submitted(id=wf_id, at=ev.at, req_stored=stored, by=by)
