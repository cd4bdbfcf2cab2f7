"""`policies.json`, re-read when it changes; fails closed while it is invalid.

An invalid new version keeps the last good one loaded, but no verdict is given (submitted events
wait, un-acked) and the state `{"ok": false, "error": ...}` is written to KV `wf_config` key
`policies`, which intake watches to answer submissions with 503 naming the problem. Fixing the
file recovers without a restart."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import msgspec
import nats.errors
import structlog
from nats.js.kv import KeyValue

from services.jobs import JobRegistry

from .registry import ConfigError, PolicyConfig, PolicyRegistry, load_policy_config

log = structlog.get_logger()
POLL_S = 0.25
STATE_KEY = "policies"


class ConfigState(msgspec.Struct):
    ok: bool
    error: str = ""
    at: float = 0.0


class PolicyConfigWatcher:
    def __init__(self, path: Path, policies: PolicyRegistry, jobs: JobRegistry, kv: KeyValue) -> None:
        self.path = path
        self.policies = policies
        self.jobs = jobs
        self.kv = kv
        self.config: PolicyConfig | None = None  # the last good configuration
        self.error: str | None = None
        self._stamp: tuple[int, int] | None = None
        self._unpublished = False  # the state changed and KV does not have it yet

    @property
    def usable(self) -> PolicyConfig | None:
        """The configuration to decide with, or None while the file is invalid (fail closed)."""
        return None if self.error is not None else self.config

    def _file_stamp(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (-1, -1)
        return (st.st_mtime_ns, st.st_size)

    async def reload_if_changed(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.config = load_policy_config(self.path, self.policies, self.jobs)
            self.error = None
            log.info("policies_loaded", workreq_names=sorted(self.config.by_name), outcome="ok")
        except ConfigError as exc:
            self.error = str(exc)
            log.error("policy_config_invalid", error=self.error, outcome="fail_closed")
        self._unpublished = True
        await self.publish_state()

    async def publish_state(self) -> None:
        """Write a changed state to KV; after a failure it is written again on the next poll."""
        if not self._unpublished:
            return
        state = ConfigState(ok=self.error is None, error=self.error or "", at=time.time())
        try:
            await self.kv.put(STATE_KEY, msgspec.json.encode(state))
            self._unpublished = False
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("config_state_not_published", error=repr(exc))

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.reload_if_changed()
            await self.publish_state()
            try:
                await asyncio.wait_for(stop.wait(), POLL_S)
            except TimeoutError:
                pass
