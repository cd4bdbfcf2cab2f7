"""wf-executor at run time: takes exec requests from its durable consumer, one actor per workflow."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from schemas import ExecRequested, event_decoder
from services.buckets import BucketConfigError, BucketStore, load_bucket_configs
from services.common.bus import connect, decode_or_terminate, jetstream
from services.common.ids import new_id
from services.common.lifecycle import bind_durable, fetch_batches, shutdown, start_micro, when_ready
from services.common.settings import VERSION, Settings
from services.common.topology import BUCKETS_BUCKET, ES_BUCKET, EVENTS_STREAM, EXECUTOR_CONSUMER, LEASES_BUCKET
from services.jobs import job_registry_or_exit
from services.safety.stops import PAUSE, STOP, EmergencyStops

from .actor import WorkflowActor
from .dispatch_buckets import DispatchLimits
from .lease import Lease

log = structlog.get_logger()


class Executor:
    def __init__(
        self, js: JetStreamContext, es: EmergencyStops, limits: DispatchLimits | None, leases: KeyValue,
        is_gate: Callable[[str], bool], max_jobs_in_flight: int | None = None,
    ) -> None:
        self.js = js
        self.is_gate = is_gate
        self.max_jobs_in_flight = max_jobs_in_flight  # per workflow: its fair share of the runners
        self.es = es
        self.limits = limits
        self.leases = leases
        self.instance = new_id()  # this process, in the leases it holds
        self.actors: dict[str, WorkflowActor] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        es.on_change(self.on_emergency_stop)

    def on_emergency_stop(self, workreq: str, state: str) -> None:
        for actor in list(self.actors.values()):
            if actor.workreq_name != workreq:
                continue
            if state == STOP:
                actor.request_stop("es")
            else:  # pause: nothing new dispatched; go: dispatch again from where it stopped
                actor.set_es_paused(state == PAUSE)

    async def on_exec_requested(self, msg: Msg) -> None:
        ev = await decode_or_terminate(msg, event_decoder)
        if ev is None:
            return
        if not isinstance(ev, ExecRequested):
            log.error("unexpected_event_terminated", subject=msg.subject, type=type(ev).__name__)
            await msg.term()
            return
        actor = self.actors.get(ev.id)
        if actor is not None:
            actor.renew(msg)
            return
        lease = Lease(self.js, self.leases, ev.id, self.instance)
        actor = WorkflowActor(self.js, ev.id, msg, self.es, self.limits, lease, self.is_gate, self.max_jobs_in_flight)
        self.actors[ev.id] = actor
        task = asyncio.create_task(self._run(actor))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, actor: WorkflowActor) -> None:
        try:
            await actor.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # the boundary: give the workflow back for redelivery and a fresh rebuild
            log.exception("workflow_actor_crashed", workflow_id=actor.id)
            await actor.release()
        finally:
            self.actors.pop(actor.id, None)

    async def stop(self) -> None:
        actors = list(self.actors.values())
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for actor in actors:
            await actor.release(delay_s=0)


async def main(settings: Settings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, "wf-executor", ca_file=settings.nats_ca)
    js = jetstream(nc)
    service = await start_micro(nc, "wf-executor", VERSION, "runs approved workflows", id_file=settings.service_id_file)
    es = EmergencyStops()
    await when_ready(lambda: js.key_value(ES_BUCKET), stop, what=ES_BUCKET)  # the bucket exists
    es_task = asyncio.create_task(es.follow(js, stop, ES_BUCKET))
    await es.ready.wait()  # never run a workflow before knowing whether its name is stopped
    try:
        buckets = load_bucket_configs(settings.config_dir / "buckets.json")
    except BucketConfigError as exc:
        log.error("startup_failed", error=str(exc))
        raise SystemExit(2) from None
    buckets_kv = await when_ready(lambda: js.key_value(BUCKETS_BUCKET), stop, what=BUCKETS_BUCKET)
    limits = DispatchLimits(buckets, BucketStore(buckets_kv))
    log.info("dispatch_limits", jobs=sorted(limits.by_job))
    leases = await when_ready(lambda: js.key_value(LEASES_BUCKET), stop, what=LEASES_BUCKET)
    # The job registry (built-ins and plugins, as the runners load it) tells the gates apart: the
    # executor decides from it that a gate's failure ends the workflow, whatever the event says.
    jobs = job_registry_or_exit(settings, check_inventory=False)
    is_gate = jobs.gate_predicate()
    log.info("gate_jobs", jobs=[name for name in jobs.names() if is_gate(name)])
    executor = Executor(js, es, limits, leases, is_gate, settings.max_jobs_in_flight_per_workflow)
    log.info("executor_instance", instance=executor.instance,
             max_jobs_in_flight_per_workflow=settings.max_jobs_in_flight_per_workflow)
    sub = await bind_durable(nc, EVENTS_STREAM, EXECUTOR_CONSUMER, stop)
    async for batch in fetch_batches(sub, 32, stop):
        for msg in batch:
            await executor.on_exec_requested(msg)
    await executor.stop()
    await es_task
    await service.stop()
    await shutdown(nc, sub)
