"""wf-jobrunner at run time: every runner shares one durable pull consumer of job commands.

A runner fetches only as many commands as it has free slots (`WF_RUNNER_CONCURRENCY`), so commands it
cannot start yet stay in the work queue for the other runners."""

from __future__ import annotations

import asyncio

import structlog
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from services.buckets import BucketStore
from services.common.bus import connect
from services.common.es import EmergencyStops
from services.common.lifecycle import bind_durable, shutdown, start_micro, when_ready
from services.common.settings import VERSION, Settings
from services.common.startup import job_registry_or_exit
from services.common.topology import BUCKETS_BUCKET, ES_BUCKET, EVENTS_STREAM, JOBS_STREAM, RUNNER_CONSUMER

from .runner import JobRunner

log = structlog.get_logger()
FETCH_MAX = 64


async def guarded(msg: Msg, runner: JobRunner) -> None:
    try:
        await runner.handle(msg)
    except asyncio.CancelledError:
        # shutting down: hand the command back at once rather than after the ack wait
        await asyncio.shield(msg.nak())
        raise
    except Exception:  # the boundary: the command stays un-acked and is redelivered
        log.exception("command_handling_failed", subject=msg.subject)


async def main(settings: Settings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, "wf-jobrunner")
    js = nc.jetstream()
    buckets_kv = await when_ready(lambda: js.key_value(BUCKETS_BUCKET), stop, what=BUCKETS_BUCKET)
    jobs = job_registry_or_exit(settings, BucketStore(buckets_kv))
    es = EmergencyStops()
    await when_ready(lambda: js.key_value(ES_BUCKET), stop, what=ES_BUCKET)  # the bucket exists
    es_task = asyncio.create_task(es.follow(js, stop, ES_BUCKET))
    await es.ready.wait()
    runner = JobRunner(js, jobs, settings.time_scale, es, settings.max_deliveries)
    ended_sub = await js.subscribe(
        "wf.evt.*.workflow.>", stream=EVENTS_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW,
        cb=runner.on_workflow_event, idle_heartbeat=2.0,
    )
    service = await start_micro(nc, "wf-jobrunner", VERSION, "runs registered jobs")
    sub = await bind_durable(nc, JOBS_STREAM, RUNNER_CONSUMER, stop)
    running: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        free = settings.runner_concurrency - len(running)
        if free <= 0:
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            continue
        for msg in await sub.take(min(free, FETCH_MAX), timeout=1.0):
            task = asyncio.create_task(guarded(msg, runner))
            running.add(task)
            task.add_done_callback(running.discard)
    # Jobs still running are abandoned un-acked: their commands are redelivered to another runner.
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    await ended_sub.unsubscribe()
    await es_task
    await service.stop()
    await shutdown(nc, sub)
