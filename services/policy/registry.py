"""Policies, their typed settings, and `configs/policies.json` (the seed's format).

A policy is built from its Settings once, when the configuration is loaded; a setting that names an
unregistered job is a configuration error then, not a surprise at submit time."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec

from schemas import Job, WorkReq
from services.common.configfile import load_config
from services.common.jsonstream import json_stream
from services.common.plugins import add_plugins
from services.inventory import InventorySource
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


class PolicyRegistry:
    def __init__(self, policies: Iterable[Policy]) -> None:
        self._policies: dict[str, Policy] = {}
        for policy in policies:
            self.add(policy)

    def add(self, policy: Policy) -> None:
        if policy.name in self._policies:
            raise ValueError(f"policy {policy.name!r} is registered twice")
        self._policies[policy.name] = policy

    def get(self, name: str) -> Policy | None:
        return self._policies.get(name)

    def names(self) -> list[str]:
        return sorted(self._policies)


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


class _PolicyRef(msgspec.Struct, forbid_unknown_fields=True):
    Name: str
    Settings: dict[str, Any] = {}


class _PolicyEntry(msgspec.Struct, forbid_unknown_fields=True):
    Name: str
    Policies: list[_PolicyRef]


@dataclass(frozen=True)
class NamedCheck:
    name: str
    check: Check


@dataclass(frozen=True)
class PolicyConfig:
    """WorkReq name -> the checks that must all pass."""

    by_name: dict[str, tuple[NamedCheck, ...]]


def parse_policy_config(text: str, policies: PolicyRegistry, jobs: JobRegistry) -> PolicyConfig:
    by_name: dict[str, tuple[NamedCheck, ...]] = {}
    try:
        values = json_stream(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for n, value in enumerate(values, start=1):
        try:
            entry = msgspec.convert(value, _PolicyEntry, strict=True)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"entry {n}: {exc}") from None
        if entry.Name in by_name:
            raise ConfigError(f"entry {n}: WorkReq name {entry.Name!r} appears twice")
        if not entry.Policies:  # would approve every WorkReq of the name: a mistake, not a policy
            raise ConfigError(f"entry {n} ({entry.Name}): Policies is empty; a WorkReq name needs at least one "
                              "policy (to allow any jobs, say so with restrictJobTypes)")
        checks = []
        for ref in entry.Policies:
            policy = policies.get(ref.Name)
            if policy is None:
                raise ConfigError(
                    f"entry {n} ({entry.Name}): unknown policy {ref.Name!r} (registered: {', '.join(policies.names())})"
                )
            try:
                checks.append(NamedCheck(ref.Name, policy.build(ref.Settings, jobs)))
            except ConfigError as exc:
                raise ConfigError(f"entry {n} ({entry.Name}): {exc}") from None
        by_name[entry.Name] = tuple(checks)
    return PolicyConfig(by_name)


def load_policy_config(path: Path, policies: PolicyRegistry, jobs: JobRegistry) -> PolicyConfig:
    return load_config(path, lambda text: parse_policy_config(text, policies, jobs), ConfigError)


def builtin_policies(inventory: InventorySource | None = None) -> list[Policy]:
    """`inventory`: what allowHosts reads to expand site names (None: a site entry allows no machine)."""
    from .policies import (
        allow_commands,
        allow_hosts,
        allow_urls,
        max_failures,
        require_approval,
        restrict_job_types,
        same_args,
        start_or_end,
    )

    return [
        allow_commands.AllowCommands(),
        allow_hosts.AllowHosts(inventory),
        allow_urls.AllowUrls(),
        max_failures.MaxFailures(),
        require_approval.RequireApproval(),
        restrict_job_types.RestrictJobTypes(),
        same_args.SameArgs(),
        start_or_end.StartOrEnd(),
    ]


POLICIES_ENTRY_POINTS = "wf.policies"


def load_policies(inventory: InventorySource | None = None) -> PolicyRegistry:
    """The built-in policies plus those of installed packages (entry-point group `wf.policies`:
    each entry is a callable returning a policy). A name registered twice is refused."""
    registry = PolicyRegistry(builtin_policies(inventory))
    add_plugins(registry, POLICIES_ENTRY_POINTS, "policy")
    return registry
