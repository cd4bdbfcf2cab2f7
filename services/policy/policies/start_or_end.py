"""Register name: "startOrEnd"

Settings:
    "JobName": the job that must come first (or last), like "tokenBucket"
    "MustArgs": {argKey: value} that job must have, like {"bucket": "diskEraseSatellite"}
    "Start" / "End": exactly one of them true
    "AllowedBeforeOrAfter": job names that may stand before it (Start) or after it (End),
        like ["validateDecom"]

Result:
    Start: scanning the first Block's jobs from the front, skipping only jobs named in
    AllowedBeforeOrAfter, the first other job must be JobName with every MustArgs pair.
    End: the same from the back of the last Block. (The seed indexed past the end there and
    crashed.) A Block of only allowed jobs violates it: JobName is not there at all.
"""

from __future__ import annotations

from typing import Any

import msgspec

from schemas import Job, WorkReq
from services.jobs import JobRegistry

from ..vocabulary import Check, ConfigError, PolicyViolation, parse_settings


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    JobName: str
    MustArgs: dict[str, str] = {}
    Start: bool = False
    End: bool = False
    AllowedBeforeOrAfter: list[str] = []


class StartOrEnd:
    name = "startOrEnd"

    def build(self, settings: dict[str, Any], jobs: JobRegistry) -> Check:
        parsed: Settings = parse_settings(self.name, Settings, settings)
        if parsed.Start == parsed.End:
            raise ConfigError(f"policy {self.name!r}: exactly one of Start and End must be true")
        if jobs.get(parsed.JobName) is None:
            raise ConfigError(f"policy {self.name!r}: JobName names unregistered job {parsed.JobName!r}")
        undeclared = sorted(set(parsed.MustArgs) - jobs.declared_args(parsed.JobName))
        if undeclared:
            raise ConfigError(f"policy {self.name!r}: job {parsed.JobName!r} has no argument {undeclared[0]!r}")
        for allowed in parsed.AllowedBeforeOrAfter:
            if jobs.get(allowed) is None:
                raise ConfigError(f"policy {self.name!r}: AllowedBeforeOrAfter names unregistered job {allowed!r}")
        allowed_names = frozenset(parsed.AllowedBeforeOrAfter)
        where = "first" if parsed.Start else "last"

        def check(req: WorkReq) -> None:
            block = req.blocks[0] if parsed.Start else req.blocks[-1]
            ordered: list[Job] = list(block.jobs) if parsed.Start else list(reversed(block.jobs))
            candidate = next((job for job in ordered if job.name not in allowed_names), None)
            if candidate is None or candidate.name != parsed.JobName:
                found = "only allowed jobs" if candidate is None else f"{candidate.name!r}"
                raise PolicyViolation(f"the {where} job of the {where} block must be {parsed.JobName!r}, found {found}")
            for key, value in parsed.MustArgs.items():
                if candidate.args.get(key) != value:
                    raise PolicyViolation(
                        f"the {where} {parsed.JobName!r} job must have {key}={value!r}, has {candidate.args.get(key)!r}"
                    )

        return check
