"""Fair, bounded resources (issue 16): one caller cannot take every request place of an endpoint,
one workflow cannot take every runner slot. The endpoint is driven with fake requests (no server);
the executor's share through its pure decision code."""

from __future__ import annotations

import asyncio
import json

import pytest

from schemas import JobCompleted, JobStarted, workreq_decoder
from services.common.endpoint import ConcurrentEndpoint
from services.common.settings import Settings
from services.executor.progress import WorkflowProgress


class FakeRequest:
    """What ConcurrentEndpoint uses of a micro request: subject, headers, data, respond."""

    def __init__(self, subject: str, headers: dict[str, str] | None) -> None:
        self.subject = subject
        self.headers = headers
        self.data = b"{}"
        self.replies: list[tuple[bytes, dict[str, str] | None]] = []

    async def respond(self, data: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.replies.append((data, headers))

    @property
    def error(self) -> dict[str, object] | None:
        if not self.replies or not self.replies[0][1]:
            return None
        return json.loads(self.replies[0][0])["error"]


def person(name: str) -> dict[str, str]:
    """The header the server adds to a person's request (PEOPLE imports wf.api.> with share: true)."""
    return {"Nats-Request-Info": json.dumps({"acc": "PEOPLE", "user": name})}


class Gate:
    """A handler that holds every request until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, request: object) -> bytes:
        self.entered += 1
        await self.release.wait()
        return b'{"ok": true}'


async def send(endpoint: ConcurrentEndpoint, headers: dict[str, str] | None) -> FakeRequest:
    request = FakeRequest(getattr(endpoint, "subject", ""), headers)  # a request on the endpoint's own subject
    await endpoint.accept(request)  # type: ignore[arg-type]
    return request


async def test_one_caller_fills_only_its_own_share_and_another_is_still_served():
    gate = Gate()
    endpoint = ConcurrentEndpoint("submit", gate, max_in_flight=4, max_in_flight_per_caller=2)
    alice = [await send(endpoint, person("alice")) for _ in range(3)]
    await asyncio.sleep(0)
    assert [r.error for r in alice[:2]] == [None, None]
    refused = alice[2].error
    assert refused is not None and refused["code"] == 429
    message = str(refused["message"])
    assert "from you (alice)" in message and "2 at once on submit per caller" in message
    assert "WF_MAX_IN_FLIGHT_PER_CALLER" in message and "wait for your earlier requests' replies" in message
    assert alice[2].replies[0][1] == {"Nats-Service-Error-Code": "429", "Nats-Service-Error": message}

    bob = await send(endpoint, person("bob"))  # another person: served although alice is at her limit
    await asyncio.sleep(0)
    assert bob.error is None and gate.entered == 3
    gate.release.set()
    await endpoint.drain()
    assert [r.replies[0][0] for r in (*alice[:2], bob)] == [b'{"ok": true}'] * 3
    assert endpoint.by_caller == {} and not endpoint.in_flight  # every place given back


async def test_the_global_limit_still_bounds_everyone_together_and_says_so():
    gate = Gate()
    endpoint = ConcurrentEndpoint("status", gate, max_in_flight=3, max_in_flight_per_caller=2)
    served = [await send(endpoint, person(name)) for name in ("alice", "alice", "bob")]
    carol = await send(endpoint, person("carol"))
    await asyncio.sleep(0)
    assert [r.error for r in served] == [None] * 3
    refused = carol.error
    assert refused is not None and refused["code"] == 429
    message = str(refused["message"])
    assert "from everyone" in message and "3 at once on status for all callers together" in message
    assert "WF_MAX_IN_FLIGHT)" in message and "retry in a moment" in message
    gate.release.set()
    await endpoint.drain()
    again = await send(endpoint, person("carol"))  # a place again once the others ended
    await endpoint.drain()
    assert again.replies == [(b'{"ok": true}', None)]


async def test_a_callers_places_come_back_when_its_requests_end_even_by_an_error():
    async def failing(request: object) -> bytes:
        raise RuntimeError("boom")

    endpoint = ConcurrentEndpoint("exec", failing, max_in_flight=4, max_in_flight_per_caller=1)
    for _ in range(3):  # one at a time: each gets the place the one before gave back
        request = await send(endpoint, person("alice"))
        await endpoint.drain()
        assert request.error is not None and request.error["code"] == 500
    assert endpoint.by_caller == {}


async def test_requests_from_inside_wf_count_as_one_caller_and_a_forged_identity_is_no_escape():
    gate = Gate()
    endpoint = ConcurrentEndpoint("submit", gate, max_in_flight=10, max_in_flight_per_caller=1)
    first = await send(endpoint, None)  # a service or admin inside WF: `admin`
    second = await send(endpoint, {"Nats-Request-Info": "not json"})  # unparsable: still inside WF, `admin`
    await asyncio.sleep(0)
    assert first.error is None
    assert second.error is not None and "from you (admin)" in str(second.error["message"])
    gate.release.set()
    await endpoint.drain()


def test_default_limits_keep_one_caller_below_everyone():
    defaults = Settings.from_env({})
    assert (defaults.max_in_flight, defaults.max_in_flight_per_caller) == (40, 10)
    assert defaults.max_in_flight_per_caller < defaults.max_in_flight
    raised = Settings.from_env({"WF_MAX_IN_FLIGHT": "200"})  # as `wf bench` sets it: 50 per caller
    assert (raised.max_in_flight, raised.max_in_flight_per_caller) == (200, 50)
    explicit = Settings.from_env({"WF_MAX_IN_FLIGHT": "8", "WF_MAX_IN_FLIGHT_PER_CALLER": "3"})
    assert (explicit.max_in_flight, explicit.max_in_flight_per_caller) == (8, 3)
    assert Settings.from_env({"WF_MAX_IN_FLIGHT": "2"}).max_in_flight_per_caller == 1  # never 0


def test_the_per_caller_limit_comes_from_the_settings_else_a_quarter():
    async def handler(request: object) -> bytes:
        return b""

    assert Settings.from_env({}).max_in_flight_per_caller == 10
    assert Settings.from_env({"WF_MAX_IN_FLIGHT_PER_CALLER": "7"}).max_in_flight_per_caller == 7
    assert Settings.from_env({"WF_MAX_IN_FLIGHT": "100"}).max_in_flight_per_caller == 25
    settings = Settings.from_env({"WF_MAX_IN_FLIGHT_PER_CALLER": "7"})
    endpoint = ConcurrentEndpoint("submit", handler, settings.max_in_flight, settings.max_in_flight_per_caller)
    assert (endpoint.max_in_flight, endpoint.max_in_flight_per_caller) == (40, 7)


def test_default_share_of_runner_slots_is_half_of_all_the_runners_slots():
    assert Settings.from_env({}).max_jobs_in_flight_per_workflow == 128  # one runner of 256
    assert Settings.from_env({"WF_RUNNERS": "2"}).max_jobs_in_flight_per_workflow == 256  # `wf up --runners 2`
    assert Settings.from_env({"WF_RUNNERS": "1", "WF_RUNNER_CONCURRENCY": "4"}).max_jobs_in_flight_per_workflow == 2
    assert Settings.from_env({"WF_RUNNER_CONCURRENCY": "1"}).max_jobs_in_flight_per_workflow == 1  # never 0
    assert Settings.from_env({"WF_MAX_JOBS_IN_FLIGHT_PER_WORKFLOW": "1000"}).max_jobs_in_flight_per_workflow == 1000


# ------------------------------------------------------------ the executor's share of runner slots


def workflow(rate_limit: int, jobs: int, max_in_flight: int | None) -> WorkflowProgress:
    body = {"name": "N", "blocks": [{"rate_limit": rate_limit, "jobs": [{"name": "sleep", "args": {}}] * jobs},
                                    {"rate_limit": rate_limit, "jobs": [{"name": "sleep", "args": {}}] * 2}]}
    return WorkflowProgress("W", workreq_decoder.decode(json.dumps(body).encode()), lambda name: False, max_in_flight)


def step(p: WorkflowProgress) -> list[tuple[int, int]]:
    decision = p.decide(now=0.0)
    p.commit(decision)
    return decision.dispatch


def complete(p: WorkflowProgress, block: int, job: int) -> None:
    p.apply(JobStarted(id="W", at=0, block=block, job=job))
    p.apply(JobCompleted(id="W", at=0, block=block, job=job))


def test_a_workflow_never_has_more_jobs_in_flight_than_its_share_whatever_its_rate_limit():
    p = workflow(rate_limit=1000, jobs=10, max_in_flight=3)
    assert step(p) == [(0, 0), (0, 1), (0, 2)]  # in job order, three of the thousand its block allows
    assert step(p) == []
    complete(p, 0, 1)
    assert step(p) == [(0, 3)]  # one ended, the next in order goes
    for j in (0, 2, 3):
        complete(p, 0, j)
    assert step(p) == [(0, 4), (0, 5), (0, 6)]
    for j in range(4, 10):
        if j < 7:
            complete(p, 0, j)
        step(p)
    for j in range(7, 10):
        complete(p, 0, j)
    assert step(p) == [(1, 0), (1, 1)]  # the next block starts once this one ended, as before


@pytest.mark.parametrize(("rate_limit", "share", "first"), [(2, 5, 2), (0, 5, 1), (5, None, 5), (5, 0, 1)])
def test_the_rate_limit_stays_a_cap_and_the_share_only_lowers_it(rate_limit, share, first):
    p = workflow(rate_limit=rate_limit, jobs=10, max_in_flight=share)
    assert len(step(p)) == first
