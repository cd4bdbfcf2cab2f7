"""wf-intake's main(): connects, follows what intake keeps in memory, and serves its endpoints.

The endpoints are served by submit.py (`wf.api.submit`, `wf.api.upload`) and control.py
(`wf.api.exec`, `cancel`, `approve`, `deny`, `pause`, `resume`, each deciding through rules.py);
followers.py holds what they read from memory. Every replica also serves the emergency-stop gate
(services/safety/gate.py)."""

from __future__ import annotations

import asyncio

import structlog

from schemas import subjects
from services.common.bus import connect, jetstream
from services.common.endpoint import ConcurrentEndpoint
from services.common.lifecycle import shutdown, start_micro, when_ready
from services.common.settings import VERSION, Settings
from services.common.topology import (
    CONFIG_BUCKET,
    ES_BUCKET,
    IDEMPOTENCY_BUCKET,
    PEOPLE_BUCKET,
    UPLOADS_BUCKET,
)
from services.safety.gate import EsGate
from services.safety.stops import EmergencyStops

from .control import Control
from .followers import PeopleRoles, PolicyConfigState, VerdictWaiters
from .submit import Idempotency, Submits, Uploads
from .workreq_limits import Limits

log = structlog.get_logger()


async def main(settings: Settings, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, "wf-intake", ca_file=settings.nats_ca)
    js = jetstream(nc)
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
    submits = Submits(nc, js, settings, Limits.from_settings(settings), waiters, policy_state, es,
                      Idempotency(idem_kv), uploads)
    control = Control(js, settings, es, people)
    # its STATS report the emergency stops it enforces: what `wf es show` prints
    service = await start_micro(nc, "wf-intake", VERSION, "takes WorkReqs and exec requests",
                                stats_handler=lambda endpoint: es.stats_data(endpoint.name),
                                id_file=settings.service_id_file)
    endpoints = [
        ConcurrentEndpoint("submit", submits.submit, settings.max_in_flight, settings.max_in_flight_per_caller),
        ConcurrentEndpoint("exec", control.exec, settings.max_in_flight, settings.max_in_flight_per_caller),
        ConcurrentEndpoint("cancel", control.cancel, settings.max_in_flight, settings.max_in_flight_per_caller),
        ConcurrentEndpoint("upload", uploads.put, settings.max_in_flight, settings.max_in_flight_per_caller),
        ConcurrentEndpoint("approve", control.approve, settings.max_in_flight, settings.max_in_flight_per_caller),
        ConcurrentEndpoint("deny", control.deny, settings.max_in_flight, settings.max_in_flight_per_caller),
        ConcurrentEndpoint("pause", control.pause, settings.max_in_flight, settings.max_in_flight_per_caller),
        ConcurrentEndpoint("resume", control.resume, settings.max_in_flight, settings.max_in_flight_per_caller),
    ]
    for ep in endpoints:
        await ep.register(service, subjects.api(ep.name))
    await stop.wait()
    await follow_task
    await es_task
    await people_task
    await service.stop()
    for ep in endpoints:
        await ep.drain()
    await shutdown(nc)
