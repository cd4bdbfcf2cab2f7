"""wf-policy at run time: the durable consumer of submitted events, publishing one verdict each."""

from __future__ import annotations

import asyncio
import time

import msgspec
import nats.micro
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from schemas import Approved, Rejected, Submitted, event_decoder
from services.common.bus import connect, last_event, publish_event
from services.common.lifecycle import bind_durable, fetch_batches, shutdown
from services.common.settings import Settings
from services.common.topology import EVENTS_STREAM, POLICY_CONSUMER
from services.jobs import JobRegistry, builtin_jobs

from .decide import decide
from .registry import ConfigError, PolicyConfig, PolicyRegistry, builtin_policies, load_policy_config

log = structlog.get_logger()
VERSION = "0.1.0"


async def already_decided(js: JetStreamContext, wf_id: str) -> bool:
    for verdict in ("approved", "rejected"):
        if await last_event(js, f"wf.evt.{wf_id}.{verdict}") is not None:
            return True
    return False


async def handle_submitted(msg: Msg, js: JetStreamContext, jobs: JobRegistry, config: PolicyConfig) -> None:
    started = time.perf_counter()
    try:
        ev = event_decoder.decode(msg.data)
    except msgspec.DecodeError as exc:
        log.error("bad_message_terminated", subject=msg.subject, error=str(exc))
        await msg.term()
        return
    if not isinstance(ev, Submitted):
        log.error("unexpected_event_terminated", subject=msg.subject, type=type(ev).__name__)
        await msg.term()
        return
    with structlog.contextvars.bound_contextvars(workflow_id=ev.id):
        # A redelivery after the duplicate window must not publish a second verdict.
        if msg.metadata.num_delivered > 1 and await already_decided(js, ev.id):
            await msg.ack()
            log.info("verdict_already_published", outcome="duplicate")
            return
        reason = decide(ev.req, jobs, config)
        verdict = Approved(id=ev.id, at=time.time()) if reason is None else Rejected(id=ev.id, at=time.time(), reason=reason)
        await publish_event(js, verdict)
        await msg.ack()
        log.info(
            "verdict_published",
            outcome="approved" if reason is None else "rejected",
            reason=reason or "",
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


async def main(settings: Settings, stop: asyncio.Event) -> None:
    jobs = JobRegistry(builtin_jobs())
    policies = PolicyRegistry(builtin_policies())
    try:
        config = load_policy_config(settings.config_dir / "policies.json", policies, jobs)
    except ConfigError as exc:
        log.error("policy_config_invalid", error=str(exc))
        raise SystemExit(2) from None
    log.info("policies_loaded", workreq_names=sorted(config.by_name))

    nc = await connect(settings.nats_url, "wf-policy")
    js = nc.jetstream()
    service = await nats.micro.add_service(nc, name="wf-policy", version=VERSION, description="validates jobs and runs policies")
    sub = await bind_durable(js, EVENTS_STREAM, POLICY_CONSUMER, stop)
    async for batch in fetch_batches(sub, 64, stop):
        for msg in batch:
            try:
                await handle_submitted(msg, js, jobs, config)
            except Exception:  # the boundary: log, leave un-acked for redelivery, keep going
                log.exception("submitted_handling_failed", subject=msg.subject)
    await service.stop()
    await shutdown(nc, sub)
