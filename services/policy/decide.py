"""The verdict on a WorkReq: no I/O, so unit tests call it directly."""

from __future__ import annotations

import asyncio

from schemas import WorkReq, encoder, workreq_decoder
from services.jobs import ArgError, JobRegistry, allowed_by

from .approvals import NONE, Requirement, combine
from .registry import NamedCheck, PolicyConfig, PolicyViolation


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


def default_deny(req: WorkReq, jobs: JobRegistry, checks: tuple[NamedCheck, ...]) -> str | None:
    """The first job that needs an allow policy (its `allowed_by`) that the policies of the WorkReq's
    name do not include; None when there is none. Default-deny: exec, ssh, http and any plugin job
    that says so run only where a policy of that name allows each use of them."""
    configured = {named.name for named in checks}
    for b, block in enumerate(req.blocks):
        for j, job in enumerate(block.jobs):
            needed = allowed_by(jobs.get(job.name))
            if needed and needed not in configured:
                return (f"policy({needed}) violation: block {b} job {j} ({job.name}): {job.name} jobs are denied "
                        f"unless the policies of WorkReq name {req.name!r} include {needed}")
    return None


def _run_check(named: NamedCheck, req_json: bytes) -> str | None:
    """One policy on its own copy of the WorkReq, so no policy can change what another sees."""
    try:
        named.check(workreq_decoder.decode(req_json))
    except PolicyViolation as violation:
        return f"policy({named.name}) violation: {violation.detail}"
    return None


# Up to this many jobs, the policies run right here: microseconds each, less than the hop to a
# thread and back (a quarter of wf-policy's CPU per submit, measured with py-spy). Above it, each
# runs in a worker thread, so a large WorkReq does not hold up the event loop.
INLINE_MAX_JOBS = 200


async def decide(req: WorkReq, jobs: JobRegistry, config: PolicyConfig) -> str | None:
    """None when approved, else the reason for rejecting.

    The policies run concurrently (each in a worker thread) for a large WorkReq; when several are
    violated, the first in the configured order is reported, so the reason does not depend on timing."""
    invalid = validate_jobs(req, jobs)
    if invalid:
        return invalid
    checks = config.by_name.get(req.name)
    if checks is None:
        return f"no policy for WorkReq name {req.name!r}"
    denied = default_deny(req, jobs, checks)
    if denied:
        return denied
    req_json = encoder.encode(req)
    if sum(len(block.jobs) for block in req.blocks) <= INLINE_MAX_JOBS:
        results = [_run_check(named, req_json) for named in checks]
    else:
        results = await asyncio.gather(*(asyncio.to_thread(_run_check, named, req_json) for named in checks))
    return next((reason for reason in results if reason is not None), None)


def approval_requirement(workreq_name: str, config: PolicyConfig) -> Requirement:
    """What the requireApproval policies of a WorkReq name ask before exec (NONE: nothing)."""
    checks = config.by_name.get(workreq_name, ())
    found = [getattr(named.check, "requirement", None) for named in checks]
    return combine(r for r in found if isinstance(r, Requirement)) if any(found) else NONE
