"""What a policy is made of: the vocabulary every policy (built-in or plugin) imports.

A policy has a `name` and a `build(settings, jobs)` that parses its typed Settings once, when
`configs/policies.json` is loaded (raising `ConfigError`), and returns a `Check`: a callable that
raises `PolicyViolation(detail)` for a WorkReq it refuses. The helpers below are what several
policies share. Policies import this module, never the registry (services/policy/registry.py),
which imports the policies: so the arrows go one way."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import msgspec

from schemas import Job, WorkReq
from services.jobs import JobRegistry, allowed_by


class ConfigError(ValueError):
    """The policy configuration cannot be used; the message says where and why."""


class PolicyViolation(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


Check = Callable[[WorkReq], None]  # raises PolicyViolation


class Policy(Protocol):
    name: str

    def build(self, settings: dict[str, Any], jobs: JobRegistry) -> Check:
        """Parse the settings (raising ConfigError) and return the check they configure."""


def guarded_uses(req: WorkReq, guarded: frozenset[str]) -> Iterator[tuple[str, Job]]:
    """Each use in the WorkReq of a job an allow policy must allow: ("block B job J (name)", the job)."""
    for b, block in enumerate(req.blocks):
        for j, job in enumerate(block.jobs):
            if job.name in guarded:
                yield f"block {b} job {j} ({job.name})", job


def json_object_pairs(text: str) -> list[tuple[str, Any]]:
    """Every (key, value) of a JSON object given as a job arg, a key repeated included (Python's
    json keeps only the last, which a check must not miss); ValueError if it is not an object."""
    pairs: list[tuple[str, Any]] = []

    def hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
        pairs.extend(items)
        return dict(items)

    if not isinstance(json.loads(text, object_pairs_hook=hook), dict):
        raise ValueError("not a JSON object")
    return pairs


def guarded_jobs(jobs: JobRegistry, policy: str) -> frozenset[str]:
    """The registered jobs that `policy` must allow (their `allowed_by` names it): the allow
    policies check these, built-in or plugin alike."""
    return frozenset(name for name in jobs.names() if allowed_by(jobs.get(name)) == policy)


def parse_settings(policy: str, struct: type[Any], raw: dict[str, Any]) -> Any:
    """Typed settings, strictly: unknown keys and wrong types are configuration errors."""
    try:
        return msgspec.convert(raw, struct, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"policy {policy!r}: bad Settings: {exc}") from None
