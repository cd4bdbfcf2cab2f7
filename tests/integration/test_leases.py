"""Executor leases against a real nats-server: one holder at a time, expiry on the server's clock,
fencing of a holder that stopped renewing."""

from __future__ import annotations

import time

import nats
import pytest

from services.common.topology import LEASES_BUCKET, ensure_topology
from services.executor.lease import SAFE_S, TTL_S, Lease, LeaseLost
from tests.conftest import eventually

pytestmark = pytest.mark.integration


async def test_one_holder_then_takeover_after_expiry_then_fencing(nats_server: str) -> None:
    nc = await nats.connect(nats_server)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        kv = await js.key_value(LEASES_BUCKET)
        first, second = Lease(js, kv, "WF1", "exec-a"), Lease(js, kv, "WF1", "exec-b")
        assert await first.acquire()
        assert not await second.acquire()  # alive: the second must wait
        await first.renew()
        assert first.held and not await second.acquire()

        # the first stops renewing (stalled, cut off): the server expires its lease, the second takes it
        stopped_at = time.monotonic()
        await eventually(second.acquire, TTL_S + 5, what="the lease to expire on the server")
        assert time.monotonic() - stopped_at >= SAFE_S  # the holder had stopped dispatching before that
        assert not first.held  # and knows it on its own, without reaching NATS
        with pytest.raises(LeaseLost):
            await first.renew()  # back: it finds the lease taken
        with pytest.raises(LeaseLost):
            await first.check()
        await first.release()  # a lost lease is not released: the second keeps it
        await second.renew()
        assert second.held

        # a clean release hands it over at once
        await second.release()
        third = Lease(js, kv, "WF1", "exec-c")
        assert await third.acquire()
    finally:
        await nc.close()


async def test_a_renewal_whose_ack_was_lost_is_still_ours(nats_server: str) -> None:
    """The renewal reached the server but its ack did not reach us: the next compare-and-set
    conflicts with our own value, which must not count as losing the lease."""
    nc = await nats.connect(nats_server)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        kv = await js.key_value(LEASES_BUCKET)
        lease = Lease(js, kv, "WF2", "exec-a")
        assert await lease.acquire()
        stale = lease.revision
        await lease.renew()
        lease.revision = stale  # as if the ack of that renewal had been lost
        await lease.renew()
        assert lease.held and not lease.lost
    finally:
        await nc.close()
