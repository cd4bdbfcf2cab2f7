"""Register name: "restrictJobTypes"

Settings:
    "AllowedJobs": the job names a WorkReq of this name may use, like ["validateDecom", "diskErase"].
        Every name must be a registered job.

Result:
    Violated by any job whose name is not in AllowedJobs.
"""

from __future__ import annotations

from typing import Any

import msgspec

from schemas import WorkReq
from services.jobs import JobRegistry

from ..vocabulary import Check, ConfigError, PolicyViolation, parse_settings


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    AllowedJobs: list[str]


class RestrictJobTypes:
    name = "restrictJobTypes"

    def build(self, settings: dict[str, Any], jobs: JobRegistry) -> Check:
        parsed: Settings = parse_settings(self.name, Settings, settings)
        for job in parsed.AllowedJobs:
            if jobs.get(job) is None:
                raise ConfigError(f"policy {self.name!r}: AllowedJobs names unregistered job {job!r}")
        allowed = frozenset(parsed.AllowedJobs)

        def check(req: WorkReq) -> None:
            for b, block in enumerate(req.blocks):
                for j, job in enumerate(block.jobs):
                    if job.name not in allowed:
                        raise PolicyViolation(f"block {b} job {j}: job {job.name!r} is not in AllowedJobs")

        return check
