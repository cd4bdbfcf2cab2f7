"""Register name: "maxFailures"

Settings:
    "Max": the largest failure budget a WorkReq of this name may ask for, an integer >= 0, like 3

Result:
    Violated by a WorkReq whose `max_failures` is missing (no limit) or above Max: an operator can
    require a failure budget for dangerous work. (Once more than `max_failures` jobs have failed,
    the executor dispatches nothing more and the workflow ends failed.)
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from schemas import WorkReq
from services.jobs import JobRegistry

from ..vocabulary import Check, PolicyViolation, parse_settings


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    Max: Annotated[int, Meta(ge=0)]


class MaxFailures:
    name = "maxFailures"

    def build(self, settings: dict[str, Any], jobs: JobRegistry) -> Check:
        parsed: Settings = parse_settings(self.name, Settings, settings)

        def check(req: WorkReq) -> None:
            if req.max_failures is None:
                raise PolicyViolation(f"max_failures must be set, at most {parsed.Max}")
            if req.max_failures > parsed.Max:
                raise PolicyViolation(f"max_failures {req.max_failures} is above Max {parsed.Max}")

        return check
