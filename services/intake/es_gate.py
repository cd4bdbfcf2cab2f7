"""The emergency-stop gate: every person's write to `wf_es` passes here, and says who made it.

A person's `$KV.wf_es.<name>` (nats-py's `kv.put`, `wf es stop`, the nats CLI's `nats kv put/del/purge`)
is imported into WF as a request on `wf.gate.es.<name>` (`wf.gate.es_mirror.<name>` from the nats CLI) carrying `Nats-Request-Info`, the identity
the server authenticated. wf-intake writes it to the bucket with the KV protocol's own headers
unchanged and three of its own: `Wf-By` (that identity, never the sender's claim), `Wf-At` (UTC) and
`Wf-Why` (the sender's reason, if any), then relays JetStream's answer (a PubAck or its error) so
every KV client works as against the bucket itself. The latest change of each name, with who, when
and why, is what `wf es show` prints (services/common/es.py reads the headers), and each change is
logged (`emergency_stop_written`).

Refused (a JetStream-style error, nothing written): `Nats-Rollup: all`, which would erase every
name and its record at once (delete or purge names one by one), a value over 1 KiB, a key the KV
protocol does not allow."""

from __future__ import annotations

import json
import re
import time

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.common.identity import REQUEST_INFO_HEADER, caller
from services.common.topology import ES_BUCKET, ES_GATE_MIRROR_PREFIX, ES_GATE_PREFIX

log = structlog.get_logger()

BY_HEADER = "Wf-By"
AT_HEADER = "Wf-At"
WHY_HEADER = "Wf-Why"
OWN_HEADERS = {BY_HEADER, AT_HEADER, "Wf-Actor", REQUEST_INFO_HEADER}
MAX_VALUE = 1024
MAX_WHY = 256
KEY_RE = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
WRITE_TIMEOUT_S = 2.0


def js_error(code: int, description: str) -> bytes:
    """An answer every JetStream client reads as an API error."""
    return json.dumps({"error": {"code": code, "err_code": 10000 + code, "description": description}}).encode()


def utc_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def written_headers(received: dict[str, str] | None, by: str, at: str) -> dict[str, str] | str:
    """The headers to write with, or why the write is refused."""
    headers = {k: v for k, v in (received or {}).items() if k not in OWN_HEADERS}
    if headers.get("Nats-Rollup", "").lower() == "all":
        return "Nats-Rollup: all would erase every emergency stop and its record; delete or purge names one at a time"
    why = headers.pop(WHY_HEADER, "").strip()
    headers[BY_HEADER], headers[AT_HEADER] = by, at
    if why:
        headers[WHY_HEADER] = why[:MAX_WHY]
    return headers


class EsGate:
    def __init__(self, nc: Client) -> None:
        self.nc = nc

    async def subscribe(self) -> None:
        # every intake replica serves the gate; each write goes to one of them
        for prefix in (ES_GATE_PREFIX, ES_GATE_MIRROR_PREFIX):
            await self.nc.subscribe(f"{prefix}.>", queue="wf-intake-es-gate", cb=self.handle)

    async def handle(self, msg: Msg) -> None:
        try:
            await self._handle(msg)
        except Exception:  # the boundary: a bad message never kills the subscription
            log.exception("es_gate_crashed", subject=msg.subject)
            await self._answer(msg, js_error(500, "internal error in the emergency-stop gate"))

    async def _handle(self, msg: Msg) -> None:
        key = msg.subject.partition(".gate.")[2].partition(".")[2]  # wf.gate.<es|es_mirror>.<key>
        who = caller(msg.headers).name
        if not KEY_RE.match(key):
            await self._answer(msg, js_error(400, f"{key!r} is not a valid key"))
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
            reply = await self.nc.request(f"$KV.{ES_BUCKET}.{key}", msg.data, timeout=WRITE_TIMEOUT_S, headers=headers)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("emergency_stop_write_failed", workreq=key, by=who, error=repr(exc))
            await self._answer(msg, js_error(503, f"the emergency-stop bucket did not answer ({type(exc).__name__}); retry"))
            return
        operation = headers.get("KV-Operation", "PUT")
        log.info("emergency_stop_written", workreq=key, by=who, operation=operation,
                 value=msg.data[:64].decode(errors="replace"), why=headers.get(WHY_HEADER, ""))
        await self._answer(msg, reply.data)

    async def _answer(self, msg: Msg, data: bytes) -> None:
        if msg.reply:
            try:
                await self.nc.publish(msg.reply, data)
            except nats.errors.Error as exc:
                log.warning("es_gate_reply_failed", error=repr(exc))
