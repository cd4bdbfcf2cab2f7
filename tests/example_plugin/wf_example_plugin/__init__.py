"""An example plugin for wf: one job and one policy, registered through entry points."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import msgspec

from schemas import WorkReq
from services.jobs import JobContext, JobEnv, JobError, parse_whole_number
from services.policy.registry import Check, PolicyViolation, parse_settings


class CountdownJob:
    """Register name: "countdown"

    Args:
        "from"(mandatory): an integer from 0 to 10, like "3"
        "failAt"(optional): an integer from 0 to 10; the job fails (not fatally) when the count reaches it

    Result:
        Counts down from `from` to 0, a (scaled) second per step, logging each step.
    """

    name = "countdown"
    mandatory_args = frozenset({"from"})
    optional_args = frozenset({"failAt"})

    def validate(self, args: Mapping[str, str]) -> None:
        for key in ("from", "failAt"):  # plain digits, bounded: "1_0", "+3", "٣" or 10**30 are ArgErrors
            if key in args:
                parse_whole_number(key, args[key], 0, 10)

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None:
        fail_at = int(args["failAt"]) if "failAt" in args else None
        for n in range(int(args["from"]), -1, -1):
            ctx.log.info("countdown", n=n, attempt_id=ctx.attempt_id)
            if n == fail_at:
                raise JobError(f"countdown reached {n}")
            await asyncio.sleep(ctx.time_scale)


class FlakyJob:
    """Register name: "flaky"

    Args:
        "succeedAt"(mandatory): the attempt that succeeds, an integer from 1 to 100, like "2"

    Result:
        Fails with a retryable error on every attempt before `succeedAt`. The runner retries it up
        to 3 attempts (max_attempts), 0.05 s, then 0.1 s apart; past that it fails.
    """

    name = "flaky"
    mandatory_args = frozenset({"succeedAt"})
    optional_args: frozenset[str] = frozenset()
    max_attempts = 3
    retry_base_s = 0.05

    def validate(self, args: Mapping[str, str]) -> None:
        parse_whole_number("succeedAt", args["succeedAt"], 1, 100)

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None:
        if ctx.attempt < int(args["succeedAt"]):
            raise JobError(f"not yet (attempt {ctx.attempt})", retryable=True)


def flaky_job(env: JobEnv) -> FlakyJob:
    return FlakyJob()


def countdown_job(env: JobEnv) -> CountdownJob:
    """The entry point: called once at start-up with the inventory and buckets, returns the job."""
    return CountdownJob()


class MaxJobsSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    Max: int


class MaxJobs:
    """Register name: "maxJobs"

    Settings:
        "Max": the most jobs a WorkReq of this name may hold, like 100

    Result:
        Violated by a WorkReq with more than Max jobs in all.
    """

    name = "maxJobs"

    def build(self, settings: dict[str, Any], jobs: object) -> Check:
        parsed: MaxJobsSettings = parse_settings(self.name, MaxJobsSettings, settings)

        def check(req: WorkReq) -> None:
            total = sum(len(block.jobs) for block in req.blocks)
            if total > parsed.Max:
                raise PolicyViolation(f"{total} jobs, more than Max {parsed.Max}")

        return check
