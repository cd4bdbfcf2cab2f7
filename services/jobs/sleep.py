"""Register name: "sleep"

Args:
    "seconds"(mandatory): whole seconds to wait, an integer >= 1, like "60".
        The wait is multiplied by the runner's `--time-scale` (0 makes it instant).

Result:
    Waits, then completes. Used between blocks to let a change settle before the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from . import ArgError, JobContext


def parse_seconds(text: str) -> int:
    try:
        seconds = int(text)
    except ValueError:
        raise ArgError("seconds", f"'seconds' must be an integer >= 1, got {text!r}") from None
    if seconds < 1:
        raise ArgError("seconds", f"'seconds' must be an integer >= 1, got {text!r}")
    return seconds


class SleepJob:
    name = "sleep"
    mandatory_args = frozenset({"seconds"})
    optional_args: frozenset[str] = frozenset()

    def validate(self, args: Mapping[str, str]) -> None:
        parse_seconds(args["seconds"])

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None:
        await asyncio.sleep(parse_seconds(args["seconds"]) * ctx.time_scale)
