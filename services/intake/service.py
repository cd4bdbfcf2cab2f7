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
    CancelRequested,
    ExecRequested,
    IdReply,
    Rejected,
    SubmitReply,
    Submitted,
    WorkReq,
    encoder,
    event_decoder,
    is_token,
    workreq_decoder,
)
from services.common.bus import connect, kv_updates, last_event, publish_event, stored_verdict, wrong_last_sequence
from services.common.endpoint import ApiError, ConcurrentEndpoint, decode_id
from services.common.es import EmergencyStops
from services.common.identity import caller
from services.common.ids import new_id
from services.common.lifecycle import shutdown, start_micro, when_ready
from services.common.settings import VERSION, Settings
from services.common.strictjson import workreq_duplicate_key
from services.common.topology import CONFIG_BUCKET, ES_BUCKET, IDEMPOTENCY_BUCKET, UPLOADS_BUCKET
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


class Intake:
    def __init__(
        self, nc: Client, settings: Settings, waiters: VerdictWaiters, policy_state: PolicyConfigState,
        es: EmergencyStops, limits: Limits, idempotency: Idempotency, uploads: Uploads,
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

    def _check_not_stopped(self, workreq: str) -> None:
        if not self.es.is_go(workreq):
            raise ApiError(423, f"emergency stop is not 'go' for {workreq!r}")

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
        try:
            await self._check_executable(wf_id)
            await publish_event(
                self.js,
                ExecRequested(id=wf_id, at=time.time(), by=caller(request.headers).name),
                headers={"Nats-Expected-Last-Subject-Sequence": "0"},
            )
        except nats.js.errors.APIError as exc:
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

    async def _check_executable(self, wf_id: str) -> None:
        submitted = await self._submission(wf_id)
        if await last_event(self.js, f"wf.evt.{wf_id}.exec_requested") is not None:
            raise ApiError(409, f"workflow {wf_id} is already executing or executed")
        if await last_event(self.js, f"wf.evt.{wf_id}.cancel_requested") is not None:
            raise ApiError(409, f"workflow {wf_id} was cancelled")
        self._check_not_stopped(submitted.workreq_name)
        if await last_event(self.js, f"wf.evt.{wf_id}.approved") is None:
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
    intake = Intake(nc, settings, waiters, policy_state, es, Limits.from_env(dict(os.environ)), Idempotency(idem_kv),
                    uploads)
    # its STATS report the emergency stops it enforces: what `wf es show` prints
    service = await start_micro(nc, "wf-intake", VERSION, "takes WorkReqs and exec requests",
                                stats_handler=lambda endpoint: es.stats_data(endpoint.name))
    endpoints = [
        ConcurrentEndpoint("submit", intake.submit, settings.max_in_flight),
        ConcurrentEndpoint("exec", intake.exec, settings.max_in_flight),
        ConcurrentEndpoint("cancel", intake.cancel, settings.max_in_flight),
        ConcurrentEndpoint("upload", uploads.put, settings.max_in_flight),
    ]
    for ep in endpoints:
        await ep.register(service, f"wf.api.{ep.name}")
    await stop.wait()
    await follow_task
    await es_task
    await service.stop()
    for ep in endpoints:
        await ep.drain()
    await shutdown(nc)
