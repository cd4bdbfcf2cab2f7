"""wf-jobrunner at run time: every runner shares one durable pull consumer of job commands.

A runner fetches only as many commands as it has free slots (`WF_RUNNER_CONCURRENCY`), so commands it
cannot start yet stay in the work queue for the other runners.

The runner runs other people's programs (the `exec` job), so it guards itself at start
(`harden_process`, then `scrub_environ` once its settings and secrets are read):
- it makes itself not dumpable (prctl PR_SET_DUMPABLE 0, Linux): a process of the same non-root uid
  can then neither read /proc/<runner>/environ or /proc/<runner>/mem nor ptrace it;
- it deletes WF_NATS_URL, WF_SECRETS_FILE and every WF_SECRET_* from its os.environ once read, so
  nothing it starts later inherits them. /proc/<runner>/environ still shows the environment the
  runner was started with, to root and (were it dumpable) to its own uid: the real fix is
  WF_EXEC_USER, an unprivileged user every exec program runs as (services/jobs/exec_cmd.py); a
  runner that is root without it logs `exec_runs_as_root` at start.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import sys
from collections.abc import MutableMapping

import structlog
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from schemas import subjects
from services.buckets import BucketStore
from services.common.bus import connect, jetstream
from services.common.lifecycle import bind_durable, shutdown, start_micro, when_ready
from services.common.settings import VERSION, Settings
from services.common.topology import (
    BUCKETS_BUCKET,
    ES_BUCKET,
    EVENTS_STREAM,
    JOBS_STREAM,
    OUTPUT_BUCKET,
    RUNNER_CONSUMER,
)
from services.jobs import job_registry_or_exit
from services.jobs.exec_cmd import exec_user_problem
from services.jobs.output import Secrets, is_secret_setting
from services.safety.stops import EmergencyStops

from .runner import JobRunner

log = structlog.get_logger()
FETCH_MAX = 64
PR_SET_DUMPABLE = 4
SCRUBBED_ENV = ("WF_NATS_URL",)  # and every secret setting (is_secret_setting)


def harden_process() -> bool:
    """prctl(PR_SET_DUMPABLE, 0) on Linux: processes of the runner's uid (not root) can no longer
    read /proc/<runner>/environ or /mem, nor ptrace it. Whether it was done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def scrub_environ(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Delete the runner's credentials from its environment once read (settings and Secrets hold
    copies): nothing started later inherits them. The names deleted."""
    names = [k for k in environ if k in SCRUBBED_ENV or is_secret_setting(k)]
    for name in names:
        del environ[name]
    return names


async def guarded(msg: Msg, runner: JobRunner) -> None:
    try:
        await runner.handle(msg)
    except asyncio.CancelledError:
        # shutting down: hand the command back at once rather than after the ack wait
        await asyncio.shield(msg.nak())
        raise
    except Exception:  # the boundary: the command stays un-acked and is redelivered
        log.exception("command_handling_failed", subject=msg.subject)


async def main(settings: Settings, stop: asyncio.Event, secrets: Secrets | None = None) -> None:
    """`secrets`: the runner's (read from the environment when not given, before it is scrubbed)."""
    secrets = Secrets.from_environ(settings.secret_settings) if secrets is None else secrets
    scrub_environ()
    problem = exec_user_problem(settings.job_settings)
    if problem is not None:
        log.warning(problem[0], message=problem[1])
    nc = await connect(settings.nats_url, "wf-jobrunner", ca_file=settings.nats_ca)
    js = jetstream(nc)
    buckets_kv = await when_ready(lambda: js.key_value(BUCKETS_BUCKET), stop, what=BUCKETS_BUCKET)
    jobs = job_registry_or_exit(settings, BucketStore(buckets_kv))
    es = EmergencyStops()
    await when_ready(lambda: js.key_value(ES_BUCKET), stop, what=ES_BUCKET)  # the bucket exists
    es_task = asyncio.create_task(es.follow(js, stop, ES_BUCKET))
    await es.ready.wait()
    output_kv = await when_ready(lambda: js.key_value(OUTPUT_BUCKET), stop, what=OUTPUT_BUCKET)
    runner = JobRunner(js, jobs, settings.time_scale, es, settings.max_deliveries,
                       secrets=secrets, output_kv=output_kv)
    ended_sub = await js.subscribe(
        subjects.any_workflow("workflow.>"), stream=EVENTS_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW,
        cb=runner.on_workflow_event, idle_heartbeat=2.0,
    )
    service = await start_micro(nc, "wf-jobrunner", VERSION, "runs registered jobs", id_file=settings.service_id_file)
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
