"""Register name: "sleep"

Args:
    "seconds"(mandatory): whole seconds to wait, from 1 to 86,400 (a day), in plain decimal
        digits, like "60" (no sign, underscore, exponent, decimal point or white space).
        The wait is multiplied by the runner's `--time-scale` (0 makes it instant).

Result:
    Waits, then completes. Used between blocks to let a change settle before the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from . import JobContext, parse_whole_number

MAX_SECONDS = 86_400


def parse_seconds(text: str) -> int:
    return parse_whole_number("seconds", text, 1, MAX_SECONDS)


class SleepJob:
    name = "sleep"
    mandatory_args = frozenset({"seconds"})
    optional_args: frozenset[str] = frozenset()

    def validate(self, args: Mapping[str, str]) -> None:
        parse_seconds(args["seconds"])

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None:
        await asyncio.sleep(parse_seconds(args["seconds"]) * ctx.time_scale)
