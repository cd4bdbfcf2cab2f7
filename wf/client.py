"""A small client of the contract's request subjects, used by the `wf` commands and the tests."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import nats.errors
from nats.aio.client import Client

from schemas import subjects
from services.common.requester import Requester
from services.common.settings import DEFAULT_NATS_URL
from services.workreqs import fits, max_body

from . import settings

REQUEST_TIMEOUT_S = 10.0


class WfError(Exception):
    """An error reply: the contract's code, its message, and the whole JSON body."""

    def __init__(self, code: int, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.body = body


def nats_url(data_dir: Path = Path(".wf"), role: str = "client") -> str:
    """WF_NATS_URL, else the URL in `<data-dir>/<role>.env` of a local `wf up`, else the default."""
    url = settings.nats_url()
    if url:
        return url
    env_file = data_dir / f"{role}.env"
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "WF_NATS_URL" and value.strip():
                return value.strip()
    return DEFAULT_NATS_URL


_REQUESTERS: WeakKeyDictionary[Client, Requester] = WeakKeyDictionary()


def requester(nc: Client) -> Requester:
    """The connection's Requester (services/common/requester.py: one reply subscription, no task or
    timer per request), made on its first request: `wf bench` submits thousands a second through it."""
    made = _REQUESTERS.get(nc)
    if made is None:
        made = _REQUESTERS[nc] = Requester(nc)
    return made


class Unreachable(Exception):
    """Nobody answered: the system is not running, or not reachable from here."""


async def call(
    nc: Client, subject: str, body: bytes, timeout_s: float = REQUEST_TIMEOUT_S, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """One request; raises WfError for an error reply, Unreachable when nobody answers."""
    if len(body) > nc.max_payload:
        message = (f"the request is {len(body)} bytes, above the server's max payload of {nc.max_payload} bytes "
                   "(wf up's embedded server allows 8 MB; raise max_payload on your own server)")
        raise WfError(413, message, {"error": {"code": 413, "message": message}})
    # who this is, for requests from inside WF (an admin): people's are named by the server, which
    # makes the services ignore this header on theirs (services/common/identity.py)
    url = nc.connected_url
    if url is not None and url.username:
        headers = {"Wf-Actor": url.username, **(headers or {})}
    try:
        msg = await requester(nc).request(subject, body, timeout=timeout_s, headers=headers)
    except nats.errors.NoRespondersError:
        raise Unreachable(f"no service answers {subject}; is `wf up` running? start it, or point WF_NATS_URL "
                          "at the server it runs") from None
    except nats.errors.TimeoutError:
        raise Unreachable(f"no reply on {subject} within {timeout_s:.0f} s; the system is overloaded or a service "
                          "is stuck: retry, and see `wf up`'s log") from None
    headers = msg.headers or {}
    data = json.loads(msg.data) if msg.data else {}
    code = headers.get("Nats-Service-Error-Code")
    if code:
        raise WfError(int(code), headers.get("Nats-Service-Error", ""), data)
    return data


SUBMIT_ATTEMPTS = 5
RETRYABLE = (429, 503)  # too many in flight; a dependency down


async def _retrying(nc: Client, subject: str, body: bytes, headers: dict[str, str], attempts: int) -> dict[str, Any]:
    """One request, repeated (same body, same headers) when no reply came or the reply was 429 or
    503, backing off 0.5, 1, 2, 4 s with jitter."""
    for attempt in range(1, attempts + 1):
        try:
            return await call(nc, subject, body, headers=headers)
        except (Unreachable, WfError) as err:
            if attempt == attempts or (isinstance(err, WfError) and err.code not in RETRYABLE):
                raise
            await asyncio.sleep(0.5 * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))
    raise AssertionError("unreachable")


async def upload(nc: Client, workreq: bytes, attempts: int = SUBMIT_ATTEMPTS) -> dict[str, str]:
    """Send a WorkReq too large for one message to `wf.api.upload` in parts that fit; returns the
    headers a submit of it carries (with an empty body) instead of the WorkReq."""
    upload_id = uuid.uuid4().hex
    size = max(1024, max_body(nc.max_payload))
    parts = [workreq[i:i + size] for i in range(0, len(workreq), size)]
    for i, part in enumerate(parts):
        await _retrying(nc, subjects.api("upload"), part, {"Wf-Upload": upload_id, "Wf-Upload-Part": str(i)}, attempts)
    return {"Wf-Upload": upload_id, "Wf-Upload-Parts": str(len(parts))}


async def submit(nc: Client, workreq: bytes, key: str | None = None, attempts: int = SUBMIT_ATTEMPTS) -> dict[str, Any]:
    """Submit with an idempotency key (`Nats-Msg-Id`, a fresh one unless given), retrying with the
    same key when no reply came or the reply was 429 or 503: a retry never makes a second workflow.
    A WorkReq larger than the server's max payload is uploaded in parts first."""
    headers = {"Nats-Msg-Id": key or f"wf-submit-{uuid.uuid4()}"}
    if not fits(nc.max_payload, len(workreq)):
        headers.update(await upload(nc, workreq, attempts))
        workreq = b""
    return await _retrying(nc, subjects.api("submit"), workreq, headers, attempts)


async def execute(nc: Client, wf_id: str) -> dict[str, Any]:
    return await call(nc, subjects.api("exec"), json.dumps({"id": wf_id}).encode())


async def status(nc: Client, wf_id: str, timeout_s: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
    return await call(nc, subjects.api("status"), json.dumps({"id": wf_id}).encode(), timeout_s=timeout_s)


async def cancel(nc: Client, wf_id: str) -> dict[str, Any]:
    return await call(nc, subjects.api("cancel"), json.dumps({"id": wf_id}).encode())


async def approve(nc: Client, wf_id: str, comment: str = "") -> dict[str, Any]:
    """`wf.api.approve`: reply `{"id", "approvals", "approvals_needed"}`."""
    return await call(nc, subjects.api("approve"), json.dumps({"id": wf_id, "comment": comment}).encode())


async def deny(nc: Client, wf_id: str, comment: str) -> dict[str, Any]:
    return await call(nc, subjects.api("deny"), json.dumps({"id": wf_id, "comment": comment}).encode())


async def pause(nc: Client, wf_id: str) -> dict[str, Any]:
    """`wf.api.pause`: nothing new dispatched for the workflow until `resume`; running jobs finish."""
    return await call(nc, subjects.api("pause"), json.dumps({"id": wf_id}).encode())


async def resume(nc: Client, wf_id: str) -> dict[str, Any]:
    return await call(nc, subjects.api("resume"), json.dumps({"id": wf_id}).encode())


async def logs(nc: Client, wf_id: str, block: int, job: int) -> dict[str, Any]:
    """`wf.api.logs`: one job's whole kept output (the last 256 KiB of its latest attempt, redacted),
    reply `{"id", "block", "job", "name", "status", "output", "kept"}`."""
    return await call(nc, subjects.api("logs"), json.dumps({"id": wf_id, "block": block, "job": job}).encode())
