"""Token buckets taken at dispatch (`DispatchLimits`): a bucket in buckets.json that lists `jobs`
is taken by the executor before it emits each command for those jobs, across all workflows and all
executor replicas (the bucket's state is shared in KV `wf_buckets`): a global rate per kind of work.

Not to be confused with a block's `rate_limit`, which is no rate but the most jobs of the block in
flight at once, enforced in services/executor/progress.py (`WorkflowProgress.decide`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog

from services.buckets import BucketConfig, BucketStore

log = structlog.get_logger()


class DispatchLimits:
    def __init__(self, buckets: Mapping[str, BucketConfig], store: BucketStore) -> None:
        self.store = store
        self.by_job: dict[str, list[tuple[str, BucketConfig]]] = {}
        for name, config in buckets.items():
            for job in config.jobs:
                self.by_job.setdefault(job, []).append((name, config))

    def limited(self, job: str) -> bool:
        return job in self.by_job

    async def take(self, job: str, stopping: asyncio.Event) -> bool:
        """One token from every bucket limiting `job`, waiting (without polling) for each to come.
        False if `stopping` was set meanwhile: then nothing more may be dispatched."""
        for bucket, config in self.by_job.get(job, []):
            while True:
                if stopping.is_set():
                    return False
                wait_s = await self.store.take(bucket, config)
                if wait_s == 0.0:
                    break
                try:
                    await asyncio.wait_for(stopping.wait(), wait_s)
                except TimeoutError:
                    pass
        return True
