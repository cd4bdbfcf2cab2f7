"""Running one job command: `started`, the job, then `completed` or `failed`, then the ack.

Delivery is at-least-once: a runner that dies mid-job leaves the command to be redelivered after
the ack wait, and the job runs again (each attempt has its own id, `JobContext.attempt_id`). A
redelivered command whose job already has a terminal event is only acked, not run again."""

from __future__ import annotations

import asyncio
import time

import msgspec
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from schemas import JobCommand, JobCompleted, JobFailed, JobStarted, command_decoder
from services.common.bus import last_event, publish_event
from services.common.topology import RUNNER_ACK_WAIT_S
from services.jobs import JobContext, JobError, JobRegistry

log = structlog.get_logger()
KEEPALIVE_S = RUNNER_ACK_WAIT_S / 3


async def already_ended(js: JetStreamContext, cmd: JobCommand) -> bool:
    base = f"wf.evt.{cmd.id}.job.{cmd.block}.{cmd.job}"
    for state in ("completed", "failed"):
        if await last_event(js, f"{base}.{state}") is not None:
            return True
    return False


async def keep_alive(msg: Msg) -> None:
    """In-progress acks, so a long job keeps its command."""
    while True:
        await asyncio.sleep(KEEPALIVE_S)
        try:
            await msg.in_progress()
        except nats.errors.Error as exc:
            log.warning("keepalive_failed", error=repr(exc))


async def run_job(jobs: JobRegistry, cmd: JobCommand, ctx: JobContext) -> JobCompleted | JobFailed:
    job = jobs.get(cmd.name)

    def failed(error: str, fatal: bool) -> JobFailed:
        return JobFailed(id=cmd.id, block=cmd.block, job=cmd.job, attempt=ctx.attempt, at=time.time(), error=error, fatal=fatal)

    if job is None:
        return failed(f"unknown job {cmd.name!r}", True)
    try:
        await job.run(cmd.args, ctx)
    except JobError as err:
        return failed(err.message, err.fatal)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a job's own bug fails the job, never the runner
        log.exception("job_crashed")
        return failed(f"job crashed: {exc!r}", False)
    return JobCompleted(id=cmd.id, block=cmd.block, job=cmd.job, attempt=ctx.attempt, at=time.time())


async def handle_command(msg: Msg, js: JetStreamContext, jobs: JobRegistry, time_scale: float) -> None:
    started = time.perf_counter()
    try:
        cmd = command_decoder.decode(msg.data)
    except msgspec.DecodeError as exc:
        log.error("bad_command_terminated", subject=msg.subject, error=str(exc))
        await msg.term()
        return
    attempt = msg.metadata.num_delivered
    structlog.contextvars.bind_contextvars(workflow_id=cmd.id, block=cmd.block, job=cmd.job, job_name=cmd.name, attempt=attempt)
    if attempt > 1 and await already_ended(js, cmd):
        await msg.ack()
        log.info("job_handled", outcome="already_ended")
        return
    await publish_event(js, JobStarted(id=cmd.id, block=cmd.block, job=cmd.job, attempt=attempt, at=time.time()))
    ctx = JobContext(workflow_id=cmd.id, block=cmd.block, job=cmd.job, attempt=attempt, time_scale=time_scale, log=log)
    keepalive = asyncio.create_task(keep_alive(msg))
    try:
        result = await run_job(jobs, cmd, ctx)
    finally:
        keepalive.cancel()
    await publish_event(js, result)
    await msg.ack()
    log.info(
        "job_handled",
        outcome="completed" if isinstance(result, JobCompleted) else "failed",
        error=getattr(result, "error", ""),
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )
