"""wf-status at run time: wires the projection writer (writer.py) to the durable `status` consumer
and the queries (api.py) to `wf.api.status` and `wf.api.logs`.

Where the rest is: the fold (fold.py, pure), when a workflow is written (pacing.py), the projections
in memory (cache.py), how a StatusResp is stored and rebuilt (storage.py)."""

from __future__ import annotations

import asyncio

from schemas import subjects
from services.common.bus import connect, jetstream
from services.common.endpoint import ConcurrentEndpoint
from services.common.lifecycle import bind_durable, fetch_batches, shutdown, start_micro, when_ready
from services.common.settings import VERSION, Settings
from services.common.topology import EVENTS_STREAM, OUTPUT_BUCKET, STATUS_BUCKET, STATUS_CONSUMER

from .api import StatusApi
from .writer import BATCH, GATHER_S, Projection, flush_periodically, handle_batch


async def main(settings: Settings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, "wf-status", ca_file=settings.nats_ca)
    js = jetstream(nc)
    kv = await when_ready(lambda: js.key_value(STATUS_BUCKET), stop, what=STATUS_BUCKET)
    output_kv = await when_ready(lambda: js.key_value(OUTPUT_BUCKET), stop, what=OUTPUT_BUCKET)
    api = StatusApi(nc, js, kv, output_kv)
    service = await start_micro(nc, "wf-status", VERSION, "status projection and queries", id_file=settings.service_id_file)
    endpoint = ConcurrentEndpoint("status", api.status, settings.max_in_flight, settings.max_in_flight_per_caller)
    await endpoint.register(service, subjects.api("status"))
    logs_endpoint = ConcurrentEndpoint("logs", api.logs, settings.max_in_flight, settings.max_in_flight_per_caller)
    await logs_endpoint.register(service, subjects.api("logs"))
    projection = Projection(nc, js, kv)
    flusher = asyncio.create_task(flush_periodically(projection, stop))
    sub = await bind_durable(nc, EVENTS_STREAM, STATUS_CONSUMER, stop)
    async for batch in fetch_batches(sub, BATCH, stop, gather_s=GATHER_S):
        await handle_batch(projection, batch)
    await flusher
    await service.stop()
    await endpoint.drain()
    await logs_endpoint.drain()
    await shutdown(nc, sub)
