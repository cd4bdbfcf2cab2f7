"""What every service's `__main__` does: settings, logging, run until SIGTERM/SIGINT, drain."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import nats.errors
import nats.micro
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.service import EndpointStats, Service

from .consumer_reader import ConsumerReader
from .endpoint import ENDPOINTS, ConcurrentEndpoint, stats_data
from .logs import configure_logging
from .settings import Settings

log = structlog.get_logger()
T = TypeVar("T")

Main = Callable[[Settings, asyncio.Event], Awaitable[None]]


def run_service(name: str, main: Main, redact_logs: Callable[[str], str] | None = None) -> None:
    """`redact_logs`: applied to every string of every log line (the runner's secrets)."""
    settings = Settings.from_env()
    configure_logging(name, settings.log_level, redact_logs)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("service_starting", nats_url=redact(settings.nats_url))
        await main(settings, stop)
        log.info("service_stopped")

    asyncio.run(runner())


def redact(url: str) -> str:
    """The URL(s) without their passwords (`nats://client:***@host:port`; a comma-separated list
    stays one): fit for a log line or a terminal."""
    shown = []
    for part in url.split(","):
        try:
            parsed = urlsplit(part.strip())
            if parsed.password is None:
                shown.append(part.strip())
                continue
            host = parsed.hostname or ""
            netloc = f"{parsed.username}:***@{host}" + (f":{parsed.port}" if parsed.port else "")
            shown.append(urlunsplit(parsed._replace(netloc=netloc)))
        except ValueError:
            shown.append("<an unparsable URL>")
    return ",".join(shown)


async def when_ready(factory: Callable[[], Awaitable[T]], stop: asyncio.Event, *, what: str) -> T:
    """Retry `factory` until it succeeds: a service may start before `wf up` created what it uses."""
    while True:
        try:
            return await factory()
        except nats.errors.Error as exc:
            if stop.is_set():
                raise
            log.warning("not_ready_yet", what=what, error=repr(exc))
            await asyncio.sleep(1.0)


async def bind_durable(nc: Client, stream: str, durable: str, stop: asyncio.Event) -> ConsumerReader:
    """A reader for a durable pull consumer, once the consumer exists."""

    async def bind() -> ConsumerReader:
        await nc.jetstream().consumer_info(stream, durable)
        reader = ConsumerReader(nc, stream, durable)
        await reader.subscribe()
        return reader

    return await when_ready(bind, stop, what=f"{stream}/{durable}")


async def fetch_batches(
    reader: ConsumerReader, batch: int, stop: asyncio.Event, *, idle_s: float = 1.0, gather_s: float = 0.0,
) -> AsyncIterator[list[Msg]]:
    """Batches of what has arrived, up to `batch` asked for at a time, until stopped. With `gather_s`,
    a batch not full at once waits up to that long to fill (fewer handling rounds per message, for a
    consumer off the request path; under load they are full at once)."""
    while not stop.is_set():
        msgs = await reader.take(batch, idle_s, settle_s=gather_s)
        if msgs:
            yield msgs


async def shutdown(nc: Client, *pull_subs: ConsumerReader, timeout_s: float = 3.0) -> None:
    """Unsubscribe the readers (what their open requests delivered and nobody acked is redelivered),
    drain the rest, close."""
    for sub in pull_subs:
        try:
            await sub.unsubscribe()
        except nats.errors.Error:
            pass
    try:
        await asyncio.wait_for(nc.drain(), timeout_s)
    except (TimeoutError, nats.errors.Error):
        log.warning("drain_incomplete")
    finally:
        if not nc.is_closed:
            await nc.close()


async def start_micro(
    nc: Client, name: str, version: str, description: str,
    stats_handler: Callable[[EndpointStats], dict[str, Any] | None] | None = None, *, id_file: str = "",
) -> Service:
    """The micro service (`$SRV.PING|INFO|STATS`). With `id_file` (WF_SERVICE_ID_FILE), its instance id is
    written there, so a container healthcheck can ping this very instance (`wf ping NAME --id-file F`).
    Its metadata carries the process id, by which `wf up` tells a wedged process from a live one.
    Each endpoint's `data` in `$SRV.STATS` is its ConcurrentEndpoint's own counts (endpoint.py), with
    what `stats_handler(endpoint stats)` adds (live state to report)."""
    endpoints: dict[str, ConcurrentEndpoint] = {}

    def stats(endpoint_stats: EndpointStats) -> dict[str, Any]:
        data = stats_data(endpoints, endpoint_stats)
        extra = stats_handler(endpoint_stats) if stats_handler is not None else None
        return {**data, **extra} if extra else data

    service = await nats.micro.add_service(nc, name=name, version=version, description=description,
                                           metadata={"pid": str(os.getpid())}, stats_handler=stats)
    ENDPOINTS[service] = endpoints
    if id_file:
        Path(id_file).write_text(service.id)
    return service
