"""The `wf` command line (see the contract's Commands and the README): the entry point, `main`.

It parses the arguments (wf/commands/parser.py), runs the command (wf/commands/: one module per
group) and turns every failure into one line on stderr. `wf` (pyproject's `wf.cli:main`) and
`python -m wf.cli` (what `wf up` and the tests run) both come here."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import traceback

from .commands.common import fail
from .commands.parser import build_parser
from .failures import Failure, explain


def _fatal(args: argparse.Namespace) -> Failure | None:
    """Why a Guard of the command's connections ended it (a permissions violation, a lost connection)."""
    return next((g.fatal for g in getattr(args, "guards", []) if g.fatal is not None), None)


async def _run(args: argparse.Namespace) -> int:
    """An async command; when a Guard of its connections ends it, the Guard's Failure says why."""
    try:
        return await args.func(args)
    except asyncio.CancelledError:
        failure = _fatal(args)
        if failure is None:
            raise
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        raise failure from None


def main(argv: list[str] | None = None) -> int:
    """Every failure is one line on stderr, `wf: <cause>; <what to do>`, and exit 1 (130 on Ctrl-C);
    with --debug (or WF_DEBUG=1) its traceback comes first."""
    args = build_parser().parse_args(argv)
    if not args.debug and args.command not in ("up", "bench"):
        # a command's connections report through Guard; what nats-py would still log goes with --debug
        logging.getLogger("nats").addHandler(logging.NullHandler())
        logging.getLogger("nats").propagate = False
    try:
        if args.is_async:
            return asyncio.run(_run(args))
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (Exception, asyncio.CancelledError) as exc:
        if args.debug:
            traceback.print_exception(exc, file=sys.stderr)
        return fail(explain(_fatal(args) or exc if isinstance(exc, asyncio.CancelledError) else exc))


if __name__ == "__main__":
    sys.exit(main())
