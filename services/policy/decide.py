"""The verdict on a WorkReq: pure, no I/O, so unit tests call it directly."""

from __future__ import annotations

from schemas import WorkReq
from services.jobs import ArgError, JobRegistry

from .registry import PolicyConfig, PolicyViolation


def validate_jobs(req: WorkReq, jobs: JobRegistry) -> str | None:
    """The first invalid job or argument, naming block, job and argument; None when all are valid."""
    for b, block in enumerate(req.blocks):
        for j, job in enumerate(block.jobs):
            try:
                jobs.validate(job.name, job.args)
            except ArgError as err:
                where = f"block {b} job {j} ({job.name})"
                if err.arg:
                    where += f" argument {err.arg!r}"
                return f"invalid job: {where}: {err.message}"
    return None


def decide(req: WorkReq, jobs: JobRegistry, config: PolicyConfig) -> str | None:
    """None when approved, else the reason for rejecting."""
    invalid = validate_jobs(req, jobs)
    if invalid:
        return invalid
    checks = config.by_name.get(req.name)
    if checks is None:
        return f"no policy for WorkReq name {req.name!r}"
    for named in checks:
        try:
            named.check(req)
        except PolicyViolation as violation:
            return f"policy({named.name}) violation: {violation.detail}"
    return None
