"""The emergency-stop gate: every person's write to `wf_es` passes here, and says who made it.

A person's `$KV.wf_es.<name>` (nats-py's `kv.put`, `wf es stop`, the nats CLI's `nats kv put/del/purge`)
is imported into WF as a request on `wf.gate.es.<name>` (`wf.gate.es_mirror.<name>` from the nats CLI) carrying `Nats-Request-Info`, the identity
the server authenticated. wf-intake writes it to the bucket with the KV protocol's own headers
unchanged and three of its own: `Wf-By` (that identity, never the sender's claim), `Wf-At` (UTC) and
`Wf-Why` (the sender's reason, if any), then relays JetStream's answer (a PubAck or its error) so
every KV client works as against the bucket itself. The latest change of each name, with who, when
and why, is what `wf es show` prints (services/safety/stops.py reads the headers), and each change is
logged (`emergency_stop_written`).

Only the KV protocol's own headers pass (`KV-Operation: DEL|PURGE`, `Nats-Rollup: sub`,
`Nats-Expected-Last-Subject-Sequence`) and `Wf-Why`; anything else the sender set (a TTL that
would make the change and its record vanish, a message id that would swallow a later stop, a
look-alike `WF-BY`) is dropped. Refused (a JetStream-style error, nothing written): `Nats-Rollup:
all`, which would erase every name and its record at once (delete or purge names one by one), a
value over 1 KiB, a key that is not a WorkReq name.

Writes are queued per sender and taken in turn, one sender's oldest first, so one operator's flood
cannot hold back another's stop; a sender with MAX_QUEUED_PER_CALLER writes waiting is refused
(429) until they are done. One sender's writes stay in the order sent."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from schemas import subjects
from schemas.subjects import ES_GATE_MIRROR_PREFIX, ES_GATE_PREFIX
from services.common.identity import caller
from services.common.topology import ES_BUCKET

from .stops import AT, BY, WHY

log = structlog.get_logger()

BY_HEADER, AT_HEADER, WHY_HEADER = BY, AT, WHY  # what the followers read back (stops.py)
PASSED = {"kv-operation": ("KV-Operation", {"DEL", "PURGE"}), "nats-rollup": ("Nats-Rollup", {"sub"}),
          "nats-expected-last-subject-sequence": ("Nats-Expected-Last-Subject-Sequence", None)}
MAX_VALUE = 1024
MAX_WHY = 256
KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")  # a WorkReq name (schemas.Token)
WRITE_TIMEOUT_S = 2.0
MAX_QUEUED_PER_CALLER = 64


def js_error(code: int, description: str) -> bytes:
    """An answer every JetStream client reads as an API error."""
    return json.dumps({"error": {"code": code, "err_code": 10000 + code, "description": description}}).encode()


def utc_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def written_headers(received: dict[str, str] | None, by: str, at: str) -> dict[str, str] | str:
    """The headers to write with (the KV protocol's, then who, when and why), or why the write is
    refused. Header names are compared as HTTP's are, without case."""
    headers: dict[str, str] = {}
    why = ""
    for name, value in (received or {}).items():
        key = name.strip().lower()
        if key == "nats-rollup" and value.strip().lower() == "all":
            return "Nats-Rollup: all would erase every emergency stop and its record; delete or purge names one at a time"
        if key == WHY_HEADER.lower():
            why = value.strip()
        elif key in PASSED:
            canonical, allowed = PASSED[key]
            if allowed is not None and value.strip() not in allowed:
                return f"{canonical}: {value.strip()!r} is not allowed here (only {', '.join(sorted(allowed))})"
            headers[canonical] = value.strip()
    headers[BY_HEADER], headers[AT_HEADER] = by, at
    if why:
        headers[WHY_HEADER] = why[:MAX_WHY]
    return headers


def answer_outcome(reply: bytes) -> str:
    """What JetStream said to a write: `ok`, `duplicate` or the error's description."""
    try:
        parsed = json.loads(reply)
    except ValueError:
        return "unreadable answer"
    if not isinstance(parsed, dict):
        return "unreadable answer"
    if isinstance(parsed.get("error"), dict):
        return str(parsed["error"].get("description", "error"))
    return "duplicate" if parsed.get("duplicate") else "ok"


class EsGate:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.waiting: dict[str, deque[Msg]] = {}  # sender -> their writes, oldest first
        self.turns: asyncio.Queue[str] = asyncio.Queue()  # senders with writes waiting, in turn
        self.worker: asyncio.Task[None] | None = None

    async def subscribe(self) -> None:
        self.worker = asyncio.create_task(self._work())
        # every intake replica serves the gate; each write goes to one of them
        for prefix in (ES_GATE_PREFIX, ES_GATE_MIRROR_PREFIX):
            await self.nc.subscribe(f"{prefix}.>", queue="wf-intake-es-gate", cb=self.handle)

    async def handle(self, msg: Msg) -> None:
        """Queue the write under its sender (never waits: the subscription is never held up)."""
        # a JetStream delivery keeps its stored subject (and no stream stores these) and has a `$JS.`
        # reply; a plain publish with no reply (`nats pub '$KV.wf_es.NAME' stop`) is a stop all the same
        if not msg.subject.startswith((f"{ES_GATE_PREFIX}.", f"{ES_GATE_MIRROR_PREFIX}.")) or msg.reply.startswith(f"{subjects.JS_ROOT}."):
            log.warning("es_gate_ignored", reason="a JetStream delivery, not a write")
            return
        who = caller(msg.headers).name
        queue = self.waiting.setdefault(who, deque())
        if len(queue) >= MAX_QUEUED_PER_CALLER:
            await self._answer(msg, js_error(429, f"{MAX_QUEUED_PER_CALLER} emergency-stop writes of yours are waiting; "
                                                  "retry once they are done"))
            return
        queue.append(msg)
        if len(queue) == 1:
            self.turns.put_nowait(who)

    async def _work(self) -> None:
        while True:
            who = await self.turns.get()
            queue = self.waiting.get(who)
            if not queue:
                continue
            msg = queue.popleft()
            try:
                await self._handle(msg, who)
            except Exception:  # the boundary: a bad message never stops the gate
                log.exception("es_gate_crashed", subject=msg.subject)
                await self._answer(msg, js_error(500, "internal error in the emergency-stop gate"))
            if queue:
                self.turns.put_nowait(who)  # back of the line: the next sender goes first
            else:
                self.waiting.pop(who, None)

    async def _handle(self, msg: Msg, who: str) -> None:
        key = msg.subject.partition(".gate.")[2].partition(".")[2]  # wf.gate.<es|es_mirror>.<key>
        if not KEY_RE.fullmatch(key):
            await self._answer(msg, js_error(400, f"{key[:140]!r} is not a WorkReq name (1-128 letters, digits, '-', '_')"))
            return
        if len(msg.data) > MAX_VALUE:
            await self._answer(msg, js_error(400, f"an emergency-stop value has at most {MAX_VALUE} bytes"))
            return
        headers = written_headers(msg.headers, who, utc_now())
        if isinstance(headers, str):
            log.warning("emergency_stop_write_refused", workreq=key, by=who, reason=headers)
            await self._answer(msg, js_error(400, headers))
            return
        try:
            reply = await self.nc.request(subjects.kv(ES_BUCKET, key), msg.data, timeout=WRITE_TIMEOUT_S, headers=headers)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("emergency_stop_write_failed", workreq=key, by=who, error=repr(exc))
            await self._answer(msg, js_error(503, f"the emergency-stop bucket did not answer ({type(exc).__name__}); retry"))
            return
        outcome = answer_outcome(reply.data)
        record = dict(workreq=key, by=who, operation=headers.get("KV-Operation", "PUT"),
                      value=msg.data[:64].decode(errors="replace"), why=headers.get(WHY_HEADER, ""))
        if outcome == "ok":
            log.info("emergency_stop_written", **record)
        else:
            log.warning("emergency_stop_not_written", outcome=outcome, **record)
        await self._answer(msg, reply.data)

    async def _answer(self, msg: Msg, data: bytes) -> None:
        if msg.reply:
            try:
                await self.nc.publish(msg.reply, data)
            except nats.errors.Error as exc:
                log.warning("es_gate_reply_failed", error=repr(exc))
