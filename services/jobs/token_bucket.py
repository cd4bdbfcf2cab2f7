"""Register name: "tokenBucket"

Args:
    "bucket"(mandatory): a bucket from configs/buckets.json, like "diskEraseSatellite"
    "fatal"(mandatory): "true" or "false" (anything else is invalid)

Result:
    Takes one token from the bucket, shared by every runner through KV `wf_buckets`.
    fatal=true: waits at most 1 s for a token, then fails fatally (the rest of the Block is
    cancelled and no later Block starts). fatal=false: waits until a token comes (sleeping until
    the next refill is due, not polling), or until the workflow is cancelled.
    (The seed parsed "false" as true; here "false" means wait.)

Gate: yes (`gate = True`). It guards what follows it, so ANY failure of it ends the workflow, not
only "no token" with fatal=true: a malformed bucket state in KV `wf_buckets`, a NATS timeout, a
crash, a cancel. Nothing after it in its Block is dispatched until it has completed, and no later
Block starts after it failed. (Before, a crash was a non-fatal failure and the erase went on.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from services.buckets import BucketConfig, BucketStore

from . import ArgError, JobContext, JobError

FATAL_WAIT_S = 1.0


class TokenBucketJob:
    name = "tokenBucket"
    gate = True
    mandatory_args = frozenset({"bucket", "fatal"})
    optional_args: frozenset[str] = frozenset()

    def __init__(self, buckets: Mapping[str, BucketConfig], store: BucketStore | None) -> None:
        self.buckets = buckets
        self.store = store

    def validate(self, args: Mapping[str, str]) -> None:
        if args["bucket"] not in self.buckets:
            raise ArgError("bucket", f"bucket {args['bucket']!r} is not in buckets.json (known: {', '.join(sorted(self.buckets))})")
        if args["fatal"] not in ("true", "false"):
            raise ArgError("fatal", f"'fatal' must be \"true\" or \"false\", got {args['fatal']!r}")

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None:
        config = self.buckets.get(args["bucket"])
        if config is None or self.store is None:
            raise JobError(f"bucket {args['bucket']!r} is not configured on this runner", fatal=True)
        fatal = args["fatal"] == "true"
        deadline = time.monotonic() + FATAL_WAIT_S
        while True:
            wait_s = await self.store.take(args["bucket"], config)
            if wait_s == 0.0:
                ctx.log.info("token_taken", bucket=args["bucket"])
                return
            if fatal:
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    raise JobError(f"no token in bucket {args['bucket']!r} within {FATAL_WAIT_S:.0f} s", fatal=True)
                wait_s = min(wait_s, left_s)
            await asyncio.sleep(wait_s)
