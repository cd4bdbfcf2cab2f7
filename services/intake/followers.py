"""What wf-intake follows on the bus and keeps in memory: the verdicts submits wait for, whether the
policy configuration is usable, and each person's role."""

from __future__ import annotations

import asyncio
import json

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from schemas import subjects
from services.common.bus import kv_updates
from services.common.identity import Caller
from services.policy import approvals
from services.policy.config_watch import STATE_KEY as POLICY_STATE_KEY

log = structlog.get_logger()


class VerdictWaiters:
    """Futures for submits waiting on their verdict (the verdict event's bytes), fed by one
    subscription to all verdicts (several per id: concurrent submits with one idempotency key wait
    for the same workflow)."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[bytes]]] = {}

    async def subscribe(self, nc: Client) -> None:
        for verdict in ("approved", "rejected"):
            await nc.subscribe(subjects.any_workflow(verdict), cb=self._on_verdict)
        await nc.flush()
        await nc.flush()  # one flush can be overtaken by queued commands (nats-notes)

    async def _on_verdict(self, msg: Msg) -> None:
        wf_id = subjects.workflow_id(msg.subject)
        for fut in self._waiting.get(wf_id, ()):
            if not fut.done():
                fut.set_result(msg.data)

    def expect(self, wf_id: str) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(wf_id, []).append(fut)
        return fut

    def forget(self, wf_id: str, fut: asyncio.Future[bytes]) -> None:
        waiting = self._waiting.get(wf_id, [])
        if fut in waiting:
            waiting.remove(fut)
        if not waiting:
            self._waiting.pop(wf_id, None)


class PolicyConfigState:
    """Whether the policy configuration is usable, as wf-policy last wrote it to KV `wf_config`."""

    def __init__(self) -> None:
        self.error = ""

    async def follow(self, kv: KeyValue, stop: asyncio.Event) -> None:
        async for entry in kv_updates(kv, stop, POLICY_STATE_KEY):
            if entry is None or not entry.value:
                continue
            try:
                state = json.loads(entry.value)
                self.error = "" if state.get("ok") else str(state.get("error", "invalid"))
            except (ValueError, AttributeError):
                log.warning("bad_policy_state_ignored")


class PeopleRoles:
    """Each person's role, as KV `wf_people` says (written by `wf up` and `wf user`): who may approve
    what (services/policy/approvals.py). A person missing from it is a client; a request from inside
    WF is an admin's."""

    def __init__(self) -> None:
        self.roles: dict[str, str] = {}
        self.ready = asyncio.Event()

    def role_of(self, who: Caller) -> str:
        if not who.person:
            return "admin"
        return self.roles.get(who.name, approvals.DEFAULT_ROLE)

    async def follow(self, kv: KeyValue, stop: asyncio.Event) -> None:
        async for entry in kv_updates(kv, stop):
            if entry is None:
                self.ready.set()
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.roles.pop(entry.key, None)
            else:
                self.roles[entry.key] = entry.value.decode(errors="replace").strip()
