"""One workflow's actor: follows the workflow's events, decides, emits; owns the workflow meanwhile.

Two things make an actor the workflow's owner:
- its `exec_requested` message on the executor's durable consumer, kept un-acked (renewed with
  in-progress acks) until the workflow ends. If this process dies, JetStream redelivers it after
  the ack wait to another executor (or this one, restarted): that is how a takeover starts;
- its lease in KV `wf_leases` (lease.py), renewed every second with compare-and-set under a
  server-side TTL. Nothing is dispatched without it, so a stalled or cut-off executor that comes
  back finds its lease taken and stops instead of dispatching beside the new owner.
Fresh and resumed workflows take the same path: replay the history, find commands still waiting
in the work queue, then decide.

A paused workflow (its `paused` events, or `pause` in `wf_es` for its name) keeps its actor, its
exec message (in-progress acks) and its lease (renewals) exactly as a running one does, however long
the pause: only the decision dispatches nothing. A `resumed` event wakes the actor as any event
does; `go` in `wf_es` wakes it through `set_es_paused`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from schemas import DECODE_ERRORS, Approved, Event, JobCommand, Submitted, event_decoder, subjects
from services.common.bus import Follower, follow_workflow, publish_all
from services.common.topology import EXECUTOR_ACK_WAIT_S, JOBS_STREAM
from services.safety.stops import PAUSE, STOP, EmergencyStops
from services.workreqs import StoredReqMissing, resolved

from .dispatch_buckets import DispatchLimits
from .lease import RENEW_S, Lease, LeaseLost
from .progress import Decision, WorkflowProgress

log = structlog.get_logger()
KEEPALIVE_S = EXECUTOR_ACK_WAIT_S / 3


class NotExecutable(Exception):
    """The history does not show an approved submission: the exec request is refused."""


class WorkflowActor:
    def __init__(
        self, js: JetStreamContext, wf_id: str, exec_msg: Msg, es: EmergencyStops, limits: DispatchLimits | None,
        lease: Lease, is_gate: Callable[[str], bool], max_jobs_in_flight: int | None = None,
    ) -> None:
        self.js = js
        self.max_jobs_in_flight = max_jobs_in_flight  # the workflow's share of the runners' slots
        self.is_gate = is_gate  # from this executor's own job registry, never from a failure event
        self.id = wf_id
        self.exec_msg = exec_msg
        self.lease = lease
        self.es = es
        self.limits = limits
        self._stopping = asyncio.Event()  # wakes a dispatch waiting for a token (a stop, a pause, a lost lease)
        self.progress: WorkflowProgress | None = None
        self.approved = False
        self.caught_up = False
        self._deciding = asyncio.Lock()
        self._stop_tasks: set[asyncio.Task[None]] = set()

    @property
    def workreq_name(self) -> str | None:
        return self.progress.req.name if self.progress is not None else None

    def request_stop(self, reason: str) -> None:
        """Stop now (an emergency stop seen by the executor): decide at once, not at the next event."""
        if self.progress is None or self.progress.ended:
            return
        self.progress.stop(reason)
        self._stopping.set()
        if self.caught_up:
            self._step_soon()

    def set_es_paused(self, paused: bool) -> None:
        """Its name's emergency stop went to `pause` (True) or back to `go` (False)."""
        if self.progress is None or self.progress.ended or self.progress.es_paused == paused:
            return
        self.progress.es_paused = paused
        if paused:
            self._stopping.set()  # a dispatch waiting for a token gives up: nothing new while paused
        elif self.caught_up:
            self._step_soon()

    def _step_soon(self) -> None:
        task = asyncio.create_task(self._step_or_lose())
        self._stop_tasks.add(task)
        task.add_done_callback(self._stop_tasks.discard)

    def renew(self, exec_msg: Msg) -> None:
        """A redelivery of the exec request to this same executor: hold the newest delivery."""
        self.exec_msg = exec_msg

    async def run(self) -> None:
        structlog.contextvars.bind_contextvars(workflow_id=self.id)
        if not await self.lease.acquire():
            # another executor's lease is alive (it renews it): it owns the workflow; ask again later,
            # in case it dies without finishing
            log.info("workflow_leased_elsewhere", retry_in_s=KEEPALIVE_S)
            await self.release(delay_s=KEEPALIVE_S, lease=False)
            return
        keepalive = asyncio.create_task(self._keep_ownership())
        sub = await follow_workflow(self.js, self.id)
        try:
            await self._follow(sub)
            await self.exec_msg.ack()
            log.info("workflow_finished", outcome="ended")
        except NotExecutable as exc:
            log.error("exec_refused", reason=str(exc), outcome="refused")
            await self.exec_msg.term()
        except LeaseLost:
            # taken over while this executor could not renew (stalled, or cut off from NATS): the new
            # owner goes on; this one stops without touching the workflow again
            log.warning("workflow_lease_lost", outcome="handed_over")
            return
        finally:
            keepalive.cancel()
            await sub.stop()
        await self.lease.release()

    async def release(self, delay_s: float = 2.0, lease: bool = True) -> None:
        """Give the workflow up, so another executor (or a fresh actor) takes it over after the delay."""
        if lease:
            await self.lease.release()
        try:
            await self.exec_msg.nak(delay=delay_s or None)
        except nats.errors.Error:
            pass

    async def _keep_ownership(self) -> None:
        """Renew the lease every second and the exec message's ack wait every KEEPALIVE_S."""
        last_progress = time.monotonic()
        while True:
            await asyncio.sleep(RENEW_S)
            try:
                await self.lease.renew()
            except LeaseLost:  # logged by the lease
                self._stopping.set()  # wake a dispatch waiting for a token: it must not go on
                return
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("lease_renewal_failed", error=repr(exc))
            if time.monotonic() - last_progress >= KEEPALIVE_S:
                try:
                    await self.exec_msg.in_progress()
                    last_progress = time.monotonic()
                except nats.errors.Error as exc:
                    log.warning("keepalive_failed", error=repr(exc))

    async def _follow(self, sub: Follower) -> None:
        while True:
            msg = await sub.next(KEEPALIVE_S)
            if self.lease.lost:  # taken over: not one more decision here
                raise LeaseLost(self.id)
            if msg is None:
                continue
            try:
                self._apply(await resolved(self.js, event_decoder.decode(msg.data)))
            except StoredReqMissing as exc:
                raise NotExecutable(str(exc)) from None
            except DECODE_ERRORS as exc:
                log.error("bad_event_ignored", subject=msg.subject, error=str(exc))
            if not self.caught_up:
                if msg.metadata.num_pending > 0:
                    continue
                await self._on_caught_up()
                self.caught_up = True
            if sub.pending > 0:
                continue  # apply everything already here before deciding
            await self._step()
            assert self.progress is not None
            if self.progress.ended:
                return

    async def _step_or_lose(self) -> None:
        try:
            await self._step()
        except LeaseLost:
            log.warning("stop_not_dispatched_lease_lost")  # the lease's new owner stops it instead

    async def _step(self) -> None:
        """Decide and emit; one decision at a time (events and stop requests both trigger it)."""
        async with self._deciding:
            assert self.progress is not None
            decision = self.progress.decide()
            if decision:
                await self._emit(decision)

    def _apply(self, ev: Event) -> None:
        if isinstance(ev, Submitted):
            assert ev.req is not None  # resolved by _follow
            self.progress = WorkflowProgress(self.id, ev.req, self.is_gate, self.max_jobs_in_flight)
        elif isinstance(ev, Approved):
            self.approved = True
        elif self.progress is not None:
            self.progress.apply(ev)

    async def _on_caught_up(self) -> None:
        if self.progress is None or not self.approved:
            raise NotExecutable("no approved submission in the workflow's history")
        # Commands still waiting in the work queue were dispatched before a restart: not again.
        info = await self.js.stream_info(JOBS_STREAM, subjects_filter=subjects.job_commands(self.id))
        waiting = (info.state.subjects or {}) if info.state else {}
        for subject in waiting:
            _, _, _, _, block, job = subject.split(".")
            self.progress.mark_dispatched(int(block), int(job))
        state = self.es.state(self.progress.req.name)
        if state == STOP:
            self.progress.stop("es")
        self.progress.es_paused = state == PAUSE
        log.info("workflow_resumed" if self.progress.started else "workflow_starting", waiting_commands=len(waiting))

    async def _emit(self, decision: Decision) -> None:
        assert self.progress is not None
        await self.lease.check()  # never dispatch without holding the workflow
        now = time.time()
        req = self.progress.req
        commands = [
            JobCommand(
                id=self.id, block=b, job=j, name=req.blocks[b].jobs[j].name, args=req.blocks[b].jobs[j].args, at=now,
                workreq=req.name,
            )
            for b, j in decision.dispatch
        ]
        # Events first (their acks awaited), so a block's `started` is stored before its commands.
        free = [cmd for cmd in commands if self.limits is None or not self.limits.limited(cmd.name)]
        await publish_all(self.js, decision.events)
        await publish_all(self.js, (), free)
        self.progress.commit(Decision(events=decision.events, dispatch=[(cmd.block, cmd.job) for cmd in free]))
        for ev in decision.events:
            log.info("event_emitted", type=ev.__struct_config__.tag, block=getattr(ev, "block", None))
        for cmd in commands:
            if cmd in free:
                continue
            assert self.limits is not None
            if not self.progress.stopped_by and not self.lease.lost:
                self._stopping.clear()  # set again by a stop, a pause or a lost lease from now on
            if self.progress.paused or self.progress.stopped_by:
                return  # paused (or stopped) meanwhile: the rest is dispatched on resume (or never)
            if not await self.limits.take(cmd.name, self._stopping):
                if self.lease.lost:
                    raise LeaseLost(self.id)
                return  # stopped while waiting for a token: the rest is never dispatched
            await self.lease.check()
            await publish_all(self.js, (), [cmd])
            self.progress.mark_dispatched(cmd.block, cmd.job)
        if commands:
            log.debug("jobs_dispatched", count=len(commands), block=commands[0].block)
