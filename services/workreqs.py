"""WorkReqs larger than one message.

NATS refuses a message above the server's max payload (1 MB by default; `wf up` sets 8 MB). A
WorkReq can be larger than that, and so can the `submitted` event carrying it and the StatusResp
describing it. Three things keep such a workflow working:

- a client sends the WorkReq in parts to `wf.api.upload` (kept in KV `wf_uploads` for an hour), then
  submits the upload (`wf.client.submit` does it by itself when the body is too large);
- wf-intake stores a WorkReq whose `submitted` event would be too large in the object store
  `wf_workreqs` (object name = workflow id) and publishes the event with `req_stored` instead of `req`;
  every service reads it through `load`;
- wf-status writes a StatusSummary (the jobs counted per block, not listed) when the whole StatusResp
  would be too large (services/status)."""

from __future__ import annotations

import base64
import hashlib
import io

import msgspec
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ObjectMeta, ObjectMetaOptions

from schemas import Event, StoredReq, Submitted, WorkReq, event_decoder, subjects, workreq_decoder
from services.common.bus import last_event
from services.common.topology import WORKREQ_BUCKET

# Room left in a message for its headers (KV and JetStream add their own) and the event's envelope.
HEADROOM = 16 * 1024
MAX_CHUNK = 128 * 1024  # the object store's own default chunk size


def max_body(max_payload: int) -> int:
    """The largest message body a server with this max payload takes, its headers given room."""
    return max_payload - HEADROOM


def fits(max_payload: int, size: int) -> bool:
    """Whether a message body of `size` bytes can be sent to a server with this max payload."""
    return size <= max_body(max_payload)


class StoredReqMissing(Exception):
    """The object a `submitted` event points to is not there (deleted by hand): never retried."""


async def store(js: JetStreamContext, wf_id: str, req_json: bytes, name: str, max_payload: int) -> StoredReq:
    """Put the WorkReq's JSON in the object store under the workflow id (idempotent: a retry that
    finds the same bytes stored writes nothing)."""
    sha = hashlib.sha256(req_json)
    digest = sha.hexdigest()
    ref = StoredReq(bucket=WORKREQ_BUCKET, object=wf_id, bytes=len(req_json), sha256=digest, workreq=name)
    obs = await js.object_store(WORKREQ_BUCKET)
    try:
        info = await obs.get_info(wf_id)
        if info.size == len(req_json) and info.digest == "SHA-256=" + base64.urlsafe_b64encode(sha.digest()).decode():
            return ref  # the object store's own digest format
    except nats.js.errors.ObjectNotFoundError:
        pass
    chunk = max(1024, min(MAX_CHUNK, max_body(max_payload)))
    meta = ObjectMeta(name=wf_id, options=ObjectMetaOptions(max_chunk_size=chunk))
    await obs.put(wf_id, req_json, meta=meta)
    return ref


async def load(js: JetStreamContext, ev: Submitted) -> WorkReq:
    """The submitted WorkReq, carried in the event or stored beside it."""
    if ev.req is not None:
        return ev.req
    ref = ev.req_stored
    if ref is None:
        raise StoredReqMissing(f"workflow {ev.id}'s submitted event carries no WorkReq")
    obs = await js.object_store(ref.bucket)
    buf = io.BytesIO()  # not the default `bytes +=` per chunk: quadratic for large objects
    try:
        await obs.get(ref.object, writeinto=buf)
    except nats.js.errors.ObjectNotFoundError:
        raise StoredReqMissing(f"workflow {ev.id}'s WorkReq is not in object store {ref.bucket}") from None
    data = buf.getvalue()
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise StoredReqMissing(f"workflow {ev.id}'s stored WorkReq does not match its submitted event")
    return workreq_decoder.decode(data)


async def resolved(js: JetStreamContext, ev: Event) -> Event:
    """The event, with a `submitted` event's stored WorkReq fetched into it."""
    if isinstance(ev, Submitted) and ev.req is None:
        return msgspec.structs.replace(ev, req=await load(js, ev))
    return ev


async def submitted(js: JetStreamContext, wf_id: str) -> Submitted | None:
    """The workflow's `submitted` event with its WorkReq at hand; None if it was never submitted.
    Raises StoredReqMissing when its stored WorkReq is gone."""
    msg = await last_event(js, subjects.event(wf_id, "submitted"))
    ev = event_decoder.decode(msg.data or b"") if msg is not None else None
    if not isinstance(ev, Submitted):
        return None
    return msgspec.structs.replace(ev, req=await load(js, ev)) if ev.req is None else ev
