"""`wf logs ID BLOCK JOB [--json]`: what one job printed or received (exec, ssh, http).

The whole of what was kept (the last 256 KiB of the job's latest attempt, secrets redacted, a week
after it ran) comes from `wf.api.logs` (wf-status reads KV `wf_output`); its last 4 KiB are also in
the StatusResp job entry's `output`. A line on stderr says whose it is and how it ended, so
`wf logs ID 0 3 > out.txt` keeps only the output.

On a terminal, every control character but newline and tab (C0, DEL and C1) is shown escaped, as
`\x1b` or `\r`: a job's output is not the operator's to trust, and its escape sequences could
otherwise clear the screen, set the title, write the clipboard (OSC 52) or hide a line behind
`\r\033[2K`. `--raw` prints it as it is, and so does a redirect to a file or a pipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable

from nats.aio.client import Client

from . import client

# every C0 control but \t and \n, DEL, and the C1 controls (0x80-0x9f, as decoded characters)
_SHOWN = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)}
_SHOWN[0x0D] = "\\r"


def shown(text: str) -> str:
    """`text` with every control character that a terminal would act on written out (`\x1b`, `\r`)."""
    return text.translate(_SHOWN)


async def run(args: argparse.Namespace, connect: Callable[[argparse.Namespace], Awaitable[Client]],
              error_text: Callable[[client.WfError], str]) -> int:
    if args.block < 0 or args.job < 0:
        print("wf: BLOCK and JOB are 0-based indexes (wf status ID shows them); see `wf logs --help`", file=sys.stderr)
        return 1
    nc = await connect(args)
    try:
        try:
            reply = await client.logs(nc, args.id, args.block, args.job)
        except client.WfError as err:
            print(f"wf: {error_text(err)}", file=sys.stderr)
            return 1
    finally:
        await nc.close()
    if args.json:
        print(json.dumps(reply))
        return 0
    kept = "" if reply.get("kept") else " (no whole output kept: its last 4 KiB, if any, from the status)"
    print(f"# {reply['id']} block {reply['block']} job {reply['job']} ({reply['name']}): {reply['status']}{kept}",
          file=sys.stderr)
    out = reply.get("output", "")
    if not getattr(args, "raw", False) and sys.stdout.isatty():
        out = shown(out)
    sys.stdout.write(out if not out or out.endswith("\n") else out + "\n")
    sys.stdout.flush()
    return 0
