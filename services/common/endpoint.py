"""The one boundary of a micro endpoint: decoding errors, limits, error replies, logging.

nats-py runs one callback at a time per subscription, so a handler that waits (submit waits for a
verdict) would stall its endpoint. Each request is therefore handled in its own task, at most
`max_in_flight` at once from all callers together and `max_in_flight_per_caller` from any one
caller (the person the server authenticated: identity.py); past either, the request is refused at
once with 429 saying which limit it met. The per-caller limit is below the global one, so one
client's burst cannot take every place and lock the others out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import msgspec
import structlog
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from schemas import DECODE_ERRORS, encoder, id_request_decoder

from .identity import caller
from .ids import is_valid_id
from .strictjson import find_duplicate_key

T = TypeVar("T")

log = structlog.get_logger()

ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"


class ApiError(Exception):
    """An error reply with one of the contract's codes; `extra` goes into the JSON body."""

    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def error_body(code: int, message: str, **extra: Any) -> bytes:
    return encoder.encode({"error": {"code": code, "message": message}, **extra})


async def respond_error(request: Request, err: ApiError) -> None:
    headers = {ERROR_CODE_HEADER: str(err.code), ERROR_HEADER: err.message}
    await request.respond(error_body(err.code, err.message, **err.extra), headers=headers)


Handler = Callable[[Request], Awaitable[bytes]]


class ConcurrentEndpoint:
    """Runs a handler per request in its own task; keeps the micro STATS honest.

    The micro framework sees only `accept`, which hands each request to a task: what it counts in
    `$SRV.STATS` is requests accepted and the time to accept them. This endpoint's own counts (its
    replies, errors and handling time) are the endpoint's `data` there (`stats_data`, through
    `lifecycle.start_micro`'s stats handler).

    `max_in_flight` and `max_in_flight_per_caller`: the Settings' (WF_MAX_IN_FLIGHT,
    WF_MAX_IN_FLIGHT_PER_CALLER: by default a quarter of the first)."""

    def __init__(
        self, name: str, handler: Handler, max_in_flight: int, max_in_flight_per_caller: int,
    ) -> None:
        self.name = name
        self.handler = handler
        self.max_in_flight = max_in_flight
        self.max_in_flight_per_caller = max_in_flight_per_caller
        self.in_flight: set[asyncio.Task[None]] = set()
        self.by_caller: dict[str, int] = {}  # requests in flight per caller (no entry at 0)
        self.subject = ""
        self.handled = 0  # requests answered, errors included
        self.errors = 0  # of them answered with an error (refusals in `accept` included)
        self.last_error = ""
        self.handling_ns = 0  # their handling time in all

    async def register(self, service: Service, subject: str) -> None:
        self.subject = subject
        ENDPOINTS.setdefault(service, {})[self.name] = self
        await service.add_endpoint(name=self.name, subject=subject, handler=self.accept)

    def stats_data(self) -> dict[str, Any]:
        """This endpoint's own counts, for its `data` in `$SRV.STATS`."""
        return {"handled": self.handled, "errors": self.errors, "last_error": self.last_error,
                "average_handling_ms": round(self.handling_ns / self.handled / 1e6, 3) if self.handled else 0.0}

    async def accept(self, request: Request) -> None:
        if request.subject != self.subject:
            # A push consumer's delivery (nats-server does not check a deliver subject against its
            # creator's permissions): it keeps the stored message's subject, and no stream stores
            # `wf.api.*`. Acting on it would let any credential that may create a consumer call the
            # API (tests/integration/test_delivery_attacks.py); it gets no answer.
            log.warning("request_refused", endpoint=self.name, reason="a delivery, not a request",
                        subject=request.subject[:200])
            return
        who = caller(request.headers).name
        refusal = self._refusal(who)
        if refusal is not None:
            log.info("request_refused", endpoint=self.name, caller=who, outcome="error_429", reason=refusal.message)
            await self._reply_error(request, refusal)
            return
        self.by_caller[who] = self.by_caller.get(who, 0) + 1
        task = asyncio.create_task(self._handle(request))
        self.in_flight.add(task)
        task.add_done_callback(lambda done: self._done(done, who))

    def _refusal(self, who: str) -> ApiError | None:
        """429 when the caller holds its own share, or when everyone's requests fill the endpoint."""
        if self.by_caller.get(who, 0) >= self.max_in_flight_per_caller:
            return ApiError(429, f"too many requests in flight from you ({who}): {self.max_in_flight_per_caller} "
                                 f"at once on {self.name} per caller (WF_MAX_IN_FLIGHT_PER_CALLER); wait for "
                                 "your earlier requests' replies before sending more")
        if len(self.in_flight) >= self.max_in_flight:
            return ApiError(429, f"too many requests in flight from everyone: {self.max_in_flight} at once on "
                                 f"{self.name} for all callers together (WF_MAX_IN_FLIGHT); retry in a moment")
        return None

    def _done(self, task: asyncio.Task[None], who: str) -> None:
        self.in_flight.discard(task)
        left = self.by_caller.get(who, 0) - 1
        if left > 0:
            self.by_caller[who] = left
        else:
            self.by_caller.pop(who, None)

    async def _handle(self, request: Request) -> None:
        started = time.perf_counter()
        outcome = "ok"
        try:
            body = await self.handler(request)
            await request.respond(body)
        except ApiError as err:
            outcome = f"error_{err.code}"
            await self._reply_error(request, err)
        except Exception as exc:  # the boundary: never let one request kill the endpoint
            outcome = "error_500"
            log.exception("request_crashed", endpoint=self.name)
            await self._reply_error(request, ApiError(500, f"internal error: {type(exc).__name__}"))
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            self._record(duration_ms)
            log.info("request_handled", endpoint=self.name, outcome=outcome, duration_ms=round(duration_ms, 2))

    async def _reply_error(self, request: Request, err: ApiError) -> None:
        self.errors += 1
        self.last_error = f"{err.code}:{err.message}"
        try:
            await respond_error(request, err)
        except Exception:
            log.exception("error_reply_failed", endpoint=self.name)

    def _record(self, duration_ms: float) -> None:
        self.handled += 1
        self.handling_ns += int(duration_ms * 1e6)

    async def drain(self, timeout_s: float = 5.0) -> None:
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=timeout_s)


# Each micro service's ConcurrentEndpoints by name, for its stats handler (lifecycle.start_micro).
ENDPOINTS: WeakKeyDictionary[Service, dict[str, ConcurrentEndpoint]] = WeakKeyDictionary()


def stats_data(endpoints: dict[str, ConcurrentEndpoint], stats: EndpointStats) -> dict[str, Any]:
    endpoint = endpoints.get(stats.name)
    return endpoint.stats_data() if endpoint is not None else {}


def decode_body(data: bytes, decoder: msgspec.json.Decoder[T], shape: str) -> T:
    """A request body decoded strictly: 400 saying the `shape` it must have for what is not that
    JSON, or repeats a key (msgspec keeps a repeated key's last value: what was meant is unclear)."""
    try:
        body = decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise ApiError(400, f"request must be JSON {shape}: {exc}") from None
    duplicate = find_duplicate_key(data)
    if duplicate:
        raise ApiError(400, f"request must be JSON {shape}: {duplicate}")
    return body


def known_form(wf_id: str) -> str:
    """The id, if it can be one; else 404 (an id that cannot exist is unknown, never a subject's wildcard)."""
    if not is_valid_id(wf_id):
        raise ApiError(404, f"unknown id {wf_id!r}")
    return wf_id


def decode_id(data: bytes) -> str:
    """The id of an `{"id": ID}` request; 400 for a bad body, 404 for what cannot be an id."""
    return known_form(decode_body(data, id_request_decoder, '{"id": ID}').id)
