"""The job registry: what a WorkReq may ask for, how its args are checked, and how it runs.

Each job is one module whose docstring states, as the seed's files do, its `Register name`, its
`Args` (mandatory or optional, with an example) and its `Result`. The registry is an explicit
list built at start-up and passed in: nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import structlog


class ArgError(ValueError):
    """An argument is missing, unknown or has a bad value; `arg` names it ("" for the job itself)."""

    def __init__(self, arg: str, message: str) -> None:
        super().__init__(message)
        self.arg = arg
        self.message = message


class JobError(Exception):
    """A job failed. `fatal` cancels the rest of its Block and stops later Blocks (the seed's rule)."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.fatal = fatal


@dataclass(frozen=True, kw_only=True)
class JobContext:
    """What a running job may know about its run; one per attempt, never shared."""

    workflow_id: str
    block: int
    job: int
    attempt: int
    time_scale: float
    log: structlog.typing.FilteringBoundLogger = field(default_factory=structlog.get_logger)

    @property
    def attempt_id(self) -> str:
        """Unique per attempt: lets a job make its own side effects idempotent."""
        return f"{self.workflow_id}.{self.block}.{self.job}.{self.attempt}"


class Job(Protocol):
    name: str
    mandatory_args: frozenset[str]
    optional_args: frozenset[str]

    def validate(self, args: Mapping[str, str]) -> None:
        """Raise ArgError for a bad value; unknown and missing args are checked by the registry."""

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None:
        """Do the work; raise JobError to fail."""


class JobRegistry:
    def __init__(self, jobs: Iterable[Job]) -> None:
        self._jobs: dict[str, Job] = {}
        for job in jobs:
            if job.name in self._jobs:
                raise ValueError(f"job {job.name!r} is registered twice")
            self._jobs[job.name] = job

    def get(self, name: str) -> Job | None:
        return self._jobs.get(name)

    def names(self) -> list[str]:
        return sorted(self._jobs)

    def validate(self, name: str, args: Mapping[str, str]) -> None:
        """Check a job's name and args; raises ArgError naming the argument."""
        job = self._jobs.get(name)
        if job is None:
            raise ArgError("", f"unknown job {name!r} (registered: {', '.join(self.names())})")
        unknown = sorted(set(args) - job.mandatory_args - job.optional_args)
        if unknown:
            raise ArgError(unknown[0], f"unknown argument {unknown[0]!r}")
        missing = sorted(job.mandatory_args - set(args))
        if missing:
            raise ArgError(missing[0], f"missing mandatory argument {missing[0]!r}")
        job.validate(args)


def builtin_jobs() -> list[Job]:
    from . import sleep

    return [sleep.SleepJob()]
