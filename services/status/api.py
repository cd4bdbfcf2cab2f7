"""The status queries: `wf.api.status` (a workflow's StatusResp) and `wf.api.logs` (one job's kept
output), answered from KV `wf_status` and `wf_output`.

A workflow not projected yet (the projection lags by milliseconds) is folded from the stream
directly; a `pending` verdict is checked against the stream, so a client never reads a verdict
older than the one its submit returned."""

from __future__ import annotations

import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.micro.request import Request

from schemas import (
    LogsReply,
    encoder,
    event_decoder,
    logs_request_decoder,
    omits_jobs,
    status_decoder,
)
from services.common.bus import stored_verdict
from services.common.endpoint import ApiError, decode_body, decode_id, known_form
from services.jobs.output import output_key
from services.workreqs import fits

from . import fold
from .storage import encode_status, fold_history


class StatusApi:
    def __init__(self, nc: Client, js: JetStreamContext, kv: KeyValue, output_kv: KeyValue | None = None) -> None:
        self.nc = nc
        self.js = js
        self.kv = kv
        self.output_kv = output_kv

    async def status(self, request: Request) -> bytes:
        return await self._status_json(decode_id(request.data))

    async def logs(self, request: Request) -> bytes:
        """`wf.api.logs` {"id", "block", "job"}: one job's whole kept output (LogsReply)."""
        req = decode_body(request.data, logs_request_decoder, '{"id": ID, "block": N, "job": N}')
        known_form(req.id)
        status = status_decoder.decode(await self._status_json(req.id))
        if not 0 <= req.block < len(status.blocks):
            raise ApiError(404, f"workflow {req.id} has no block {req.block} (it has {len(status.blocks)})")
        jobs = status.blocks[req.block].jobs
        if jobs and not 0 <= req.job < len(jobs):
            raise ApiError(404, f"block {req.block} of workflow {req.id} has no job {req.job} (it has {len(jobs)})")
        job = jobs[req.job] if jobs else None  # (a summary of a very large workflow lists no jobs)
        if job is None and req.job < 0:
            raise ApiError(404, f"block {req.block} of workflow {req.id} has no job {req.job}")
        output, kept = (job.output if job else ""), False
        if self.output_kv is not None:
            try:
                entry = await self.output_kv.get(output_key(req.id, req.block, req.job))
                output, kept = (entry.value or b"").decode("utf-8", "replace"), True
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                pass
        reply = LogsReply(id=req.id, block=req.block, job=req.job, name=job.name if job else "",
                          status=job.status if job else "", output=output, kept=kept)
        data = encoder.encode(reply)
        body = output
        while not fits(self.nc.max_payload, len(data)) and body:
            # JSON escapes a control byte as six: an output of them may not fit; its end does
            body = body[len(body) // 4 or len(body):]
            reply.output = "[wf: the start was cut to fit the reply]\n" + body
            data = encoder.encode(reply)
        return data

    async def _status_json(self, wf_id: str) -> bytes:
        try:
            value = (await self.kv.get(wf_id)).value
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            value = None
        if not value:
            return await self._fold_from_stream(wf_id)
        status = status_decoder.decode(value)
        if status.verdict != "pending" or omits_jobs(value):
            return value
        # The submitter may already hold the verdict the projection has not folded yet.
        msg = await stored_verdict(self.js, wf_id)
        if msg is None:
            return value
        fold.apply(status, event_decoder.decode(msg.data or b""))
        return encoder.encode(status)

    async def _fold_from_stream(self, wf_id: str) -> bytes:
        # Not projected yet (the projection lags by milliseconds): fold the stream directly.
        status = await fold_history(self.js, wf_id)
        if status is None:
            raise ApiError(404, f"unknown id {wf_id!r}")
        return encode_status(status, self.nc.max_payload)[0]
