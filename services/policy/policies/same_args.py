"""Register name: "sameArgs"

Settings:
    "Jobs": {jobName: [argKey, ...]}, like {"diskErase": ["site"]}. Every job named must be
        registered and every arg key must be one that job declares (the keys match exactly: the
        seed shipped "Site" for an arg named "site", so its policy never checked anything).

Result:
    Violated when, for a listed job name, a listed arg does not have the same value in every job of
    that name across the whole WorkReq (a job that lacks the arg counts as a different value).
"""

from __future__ import annotations

from typing import Any

import msgspec

from schemas import WorkReq
from services.jobs import JobRegistry

from ..vocabulary import Check, ConfigError, PolicyViolation, parse_settings


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    Jobs: dict[str, list[str]]


class SameArgs:
    name = "sameArgs"

    def build(self, settings: dict[str, Any], jobs: JobRegistry) -> Check:
        parsed: Settings = parse_settings(self.name, Settings, settings)
        for job_name, keys in parsed.Jobs.items():
            if jobs.get(job_name) is None:
                raise ConfigError(f"policy {self.name!r}: Jobs names unregistered job {job_name!r}")
            undeclared = sorted(set(keys) - jobs.declared_args(job_name))
            if undeclared:
                raise ConfigError(
                    f"policy {self.name!r}: job {job_name!r} has no argument {undeclared[0]!r} "
                    f"(it declares {', '.join(sorted(jobs.declared_args(job_name)))})"
                )
        watched = {name: tuple(keys) for name, keys in parsed.Jobs.items()}

        def check(req: WorkReq) -> None:
            first: dict[tuple[str, str], tuple[str | None, int, int]] = {}
            for b, block in enumerate(req.blocks):
                for j, job in enumerate(block.jobs):
                    for key in watched.get(job.name, ()):
                        value = job.args.get(key)
                        seen = first.setdefault((job.name, key), (value, b, j))
                        if seen[0] != value:
                            raise PolicyViolation(
                                f"job {job.name!r} argument {key!r} differs: {seen[0]!r} (block {seen[1]} job {seen[2]}) "
                                f"vs {value!r} (block {b} job {j})"
                            )

        return check
