"""Policies, their typed settings, and `configs/policies.json` (the seed's format).

A policy is built from its Settings once, when the configuration is loaded; a setting that names an
unregistered job is a configuration error then, not a surprise at submit time.

What a policy is made of (`Policy`, `Check`, `ConfigError`, `PolicyViolation`, `parse_settings`...)
lives in services/policy/vocabulary.py, which the policies import; it is re-exported here, where
plugins written before it imported it from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from services.common.configfile import load_config
from services.common.jsonstream import json_stream
from services.common.plugins import Registry
from services.inventory import InventorySource
from services.jobs import JobRegistry

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
from .vocabulary import (
    Check,
    ConfigError,
    Policy,
    PolicyViolation,
    guarded_jobs,
    guarded_uses,
    json_object_pairs,
    parse_settings,
)

__all__ = [
    "Check",
    "ConfigError",
    "NamedCheck",
    "Policy",
    "PolicyConfig",
    "PolicyRegistry",
    "PolicyViolation",
    "builtin_policies",
    "guarded_jobs",
    "guarded_uses",
    "json_object_pairs",
    "load_policies",
    "load_policy_config",
    "parse_policy_config",
    "parse_settings",
]


class PolicyRegistry(Registry[Policy]):
    """Policy name -> policy (services.common.plugins.Registry)."""

    kind = "policy"

    def __init__(self, policies: Iterable[Policy] = ()) -> None:
        super().__init__(policies)


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
    registry.add_plugins(POLICIES_ENTRY_POINTS)
    return registry
