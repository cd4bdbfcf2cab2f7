"""A workflow's lease in KV `wf_leases`: who may dispatch for it, fenced by compare-and-set.

The key is the workflow id, the value JSON naming the holder (`executor` instance, `host`, `pid`)
plus a fresh `token` per acquisition: `nats kv get wf_leases ID` says which process runs a workflow. Every write carries a server-side TTL (`Nats-TTL`), so a lease whose holder stopped
renewing vanishes on the server's clock, not on anyone's wall clock; whoever then creates the key
(`Nats-Expected-Last-Subject-Sequence: 0`) owns the workflow. The holder renews every
`RENEW_S` with a compare-and-set on the revision it holds, and treats the lease as lost:
- at once, when the compare-and-set fails against someone else's value (taken over);
- when no renewal has succeeded for `SAFE_S` (< TTL), e.g. while its connection is cut, because
  the server may already have expired it. It then dispatches nothing until a renewal succeeds.
So two executors never dispatch for one workflow at the same time, whatever their clocks say."""

from __future__ import annotations

import json
import os
import socket
import time

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from schemas import subjects
from services.common.bus import EXPECTED_LAST_SEQ, wrong_last_sequence
from services.common.ids import new_id
from services.common.topology import LEASES_BUCKET

log = structlog.get_logger()

TTL_S = 5.0
RENEW_S = 1.0
SAFE_S = TTL_S - 2 * RENEW_S  # margin for the server's expiry timer and one slow round trip


class LeaseLost(Exception):
    """Another executor holds the workflow now (or may): stop dispatching for it."""


class Lease:
    def __init__(self, js: JetStreamContext, kv: KeyValue, wf_id: str, instance: str) -> None:
        self.js = js
        self.kv = kv
        self.key = wf_id
        self.value = json.dumps(
            {"executor": instance, "host": socket.gethostname(), "pid": os.getpid(), "token": new_id()}
        ).encode()
        self.revision = 0
        self.renewed_at = 0.0  # monotonic time a successful write was *sent*
        self.lost = False

    @property
    def held(self) -> bool:
        return self.revision > 0 and not self.lost and time.monotonic() - self.renewed_at < SAFE_S

    async def acquire(self) -> bool:
        """True once this lease holds the workflow; False while another executor's lease is alive."""
        for _ in range(3):
            sent = time.monotonic()
            try:
                self.revision = await self.kv.create(self.key, self.value, msg_ttl=TTL_S)
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
            except nats.js.errors.KeyNotFoundError:
                continue  # it expired between create's two steps (the write, then the look-up): again
            self.renewed_at = sent
            return True
        return False

    async def renew(self) -> None:
        """Extend the lease; raises LeaseLost if someone else holds it now. A failed round trip
        (connection down) only leaves `held` to lapse on its own."""
        if self.lost:
            raise LeaseLost(self.key)
        sent = time.monotonic()
        try:
            ack = await self.js.publish(
                subjects.kv(LEASES_BUCKET, self.key), self.value, timeout=RENEW_S,
                headers={EXPECTED_LAST_SEQ: str(self.revision)}, msg_ttl=TTL_S,
            )
        except nats.js.errors.APIError as exc:
            if not wrong_last_sequence(exc):
                raise
            await self._after_conflict()
            return
        self.revision, self.renewed_at = ack.seq, sent

    async def _after_conflict(self) -> None:
        # Our last renewal may have been stored with its ack lost: then the stored value is ours.
        try:
            entry = await self.kv.get(self.key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            entry = None
        if entry is not None and entry.value == self.value and entry.revision:
            self.revision = entry.revision
            return
        self.lost = True
        # whichever path found it (the renewal loop, or the check before a dispatch), say so once
        log.warning("lease_taken_over")
        raise LeaseLost(self.key)

    async def check(self) -> None:
        """Before dispatching: renew now if the last renewal is not recent enough; LeaseLost if not held."""
        if not self.held and not self.lost:
            try:
                await self.renew()
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("lease_renewal_failed", error=repr(exc))
        if not self.held:
            raise LeaseLost(self.key)

    async def release(self) -> None:
        """Give it up (the workflow ended, or this executor stops): a delete marker, compare-and-set,
        itself expiring so ended workflows leave nothing behind."""
        if self.revision == 0 or self.lost:
            return
        try:
            await self.js.publish(
                subjects.kv(LEASES_BUCKET, self.key), b"", timeout=RENEW_S, msg_ttl=TTL_S,
                headers={"KV-Operation": "DEL", EXPECTED_LAST_SEQ: str(self.revision)},
            )
        except (TimeoutError, nats.errors.Error) as exc:  # it expires on its own
            log.info("lease_release_failed", error=repr(exc))
        self.revision = 0
