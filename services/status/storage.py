"""A StatusResp as it is stored and rebuilt: `encode_status` (the JSON written to KV `wf_status`:
whole, with outputs cut, or a StatusSummary, to fit the server's max payload) and `fold_history`
(the StatusResp folded again from a workflow's whole history in WF_EVENTS). Used by the writer
(writer.py) and by the queries (api.py)."""

from __future__ import annotations

import msgspec
from nats.js import JetStreamContext

from schemas import StatusResp, Submitted, encoder, event_decoder, subjects, summarise
from services.common.bus import last_event, read_history
from services.workreqs import fits, resolved

from . import fold

OUTPUT_SHORT = 256  # bytes of each job's `output` kept when the whole StatusResp would not fit
REBUILD_TIMEOUT_S = 300.0  # reading a large workflow's whole history back from WF_EVENTS


def encode_status(status: StatusResp, max_payload: int) -> tuple[bytes, int]:
    """The StatusResp's JSON; when the whole would exceed the server's max payload, first the same
    with each job's `output` cut to its last OUTPUT_SHORT bytes, then without outputs (`wf logs`
    has them), and only then its StatusSummary (a workflow of very many jobs); and the whole's
    size, which paces its writes."""
    data = encoder.encode(status)
    if fits(max_payload, len(data)):
        return data, len(data)
    if any(job.output for block in status.blocks for job in block.jobs):
        for keep in (OUTPUT_SHORT, 0):
            shorter = msgspec.structs.replace(status, blocks=[
                msgspec.structs.replace(block, jobs=[
                    msgspec.structs.replace(job, output=_last_bytes(job.output, keep)) for job in block.jobs])
                for block in status.blocks])
            trimmed = encoder.encode(shorter)
            if fits(max_payload, len(trimmed)):
                return trimmed, len(data)
    return encoder.encode(summarise(status)), len(data)


def _last_bytes(text: str, size: int) -> str:
    raw = text.encode("utf-8")
    return text if len(raw) <= size else raw[len(raw) - size:].decode("utf-8", "ignore")


async def fold_history(js: JetStreamContext, wf_id: str) -> StatusResp | None:
    """The workflow's StatusResp folded from its whole history in WF_EVENTS (None: not submitted)."""
    if await last_event(js, subjects.event(wf_id, "submitted")) is None:
        return None
    events = [event_decoder.decode(m.data) for m in await read_history(js, wf_id, timeout_s=REBUILD_TIMEOUT_S)]
    first = await resolved(js, events[0])
    assert isinstance(first, Submitted)
    status = fold.new_status(first)
    for ev in events:
        fold.apply(status, ev)
    return status
