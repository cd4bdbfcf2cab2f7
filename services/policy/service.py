"""wf-policy at run time: the durable consumer of submitted events, publishing one verdict each."""

from __future__ import annotations

import asyncio
import time

import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from schemas import Approved, Rejected, Submitted, event_decoder, subjects
from services import workreqs
from services.common.bus import (
    EXPECTED_LAST_SEQ,
    EXPECTED_LAST_SEQ_SUBJECT,
    connect,
    decode_or_terminate,
    jetstream,
    publish_event,
    stored_verdict,
    times_delivered,
    wrong_last_sequence,
)
from services.common.lifecycle import bind_durable, fetch_batches, shutdown, start_micro, when_ready
from services.common.logs import bound
from services.common.settings import VERSION, Settings
from services.common.topology import CONFIG_BUCKET, EVENTS_STREAM, POLICY_CONSUMER
from services.inventory import InventorySource
from services.jobs import JobRegistry, job_registry_or_exit

from .config_watch import PolicyConfigWatcher
from .decide import approval_requirement, decide
from .registry import load_policies

log = structlog.get_logger()


def never_both(verdict: Approved | Rejected) -> dict[str, str]:
    """JetStream refuses a verdict when the opposite one is stored: a workflow is never both approved
    and rejected, whatever the duplicate window (a `submitted` replayed later, under a changed
    policy file, could otherwise bring the opposite verdict). The same verdict twice is harmless."""
    opposite = "rejected" if isinstance(verdict, Approved) else "approved"
    return {EXPECTED_LAST_SEQ: "0", EXPECTED_LAST_SEQ_SUBJECT: subjects.event(verdict.id, opposite)}


async def handle_submitted(msg: Msg, js: JetStreamContext, jobs: JobRegistry, watcher: PolicyConfigWatcher) -> None:
    started = time.perf_counter()
    ev = await decode_or_terminate(msg, event_decoder)
    if ev is None:
        return
    if not isinstance(ev, Submitted):
        log.error("unexpected_event_terminated", subject=msg.subject, type=type(ev).__name__)
        await msg.term()
        return
    with bound(workflow_id=ev.id):
        # A redelivery after the duplicate window must not publish a second verdict.
        if times_delivered(msg) > 1 and await stored_verdict(js, ev.id) is not None:
            await msg.ack()
            log.info("verdict_already_published", outcome="duplicate")
            return
        config = watcher.usable
        if config is None:  # fail closed: decide once the file is fixed
            await msg.nak(delay=1.0)
            log.warning("verdict_deferred", reason=watcher.error, outcome="deferred")
            return
        try:
            reason = await decide(await workreqs.load(js, ev), jobs, config)
        except workreqs.StoredReqMissing as exc:
            reason = str(exc)
        if reason is None:
            needs = approval_requirement(ev.workreq_name, config)  # requireApproval: exec waits for people
            verdict: Approved | Rejected = Approved(id=ev.id, at=time.time(), approvals_needed=needs.approvers,
                                                    approver_role=needs.role)
        else:
            verdict = Rejected(id=ev.id, at=time.time(), reason=reason)
        try:
            await publish_event(js, verdict, headers=never_both(verdict))
        except nats.js.errors.APIError as exc:
            if not wrong_last_sequence(exc):
                raise
            # the opposite verdict is stored (a `submitted` replayed after the policy changed): it stands
            await msg.ack()
            log.warning("opposite_verdict_exists", outcome="duplicate")
            return
        await msg.ack()
        log.info(
            "verdict_published",
            outcome="approved" if reason is None else "rejected",
            reason=reason or "",
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )


async def main(settings: Settings, stop: asyncio.Event) -> None:
    jobs = job_registry_or_exit(settings)
    try:
        policies = load_policies(InventorySource(settings.inventory_dir))  # allowHosts reads it per verdict
    except ValueError as exc:
        log.error("startup_failed", error=str(exc))
        raise SystemExit(2) from None

    nc = await connect(settings.nats_url, "wf-policy", ca_file=settings.nats_ca)
    js = jetstream(nc)
    kv = await when_ready(lambda: js.key_value(CONFIG_BUCKET), stop, what=CONFIG_BUCKET)
    watcher = PolicyConfigWatcher(settings.config_dir / "policies.json", policies, jobs, kv)
    await watcher.reload_if_changed()
    watch_task = asyncio.create_task(watcher.watch(stop))
    service = await start_micro(nc, "wf-policy", VERSION, "validates jobs and runs policies", id_file=settings.service_id_file)
    sub = await bind_durable(nc, EVENTS_STREAM, POLICY_CONSUMER, stop)
    async def guarded(msg: Msg) -> None:
        try:
            await handle_submitted(msg, js, jobs, watcher)
        except Exception:  # the boundary: log, leave un-acked for redelivery, keep going
            log.exception("submitted_handling_failed", subject=msg.subject)

    async for batch in fetch_batches(sub, 64, stop):
        # verdicts are independent: decide a batch concurrently, not one round trip after another
        await asyncio.gather(*(guarded(msg) for msg in batch))
    await watch_task
    await service.stop()
    await shutdown(nc, sub)
