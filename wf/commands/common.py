"""What every `wf` command shares: the one-line failure, a connection as a role that fails in one
line (its Guard reports nats-py's errors), and the text of the contract's error replies."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nats
import nats.errors
from nats.aio.client import Client

from services.common.bus import server_urls, tls_context
from services.common.lifecycle import redact
from services.common.settings import REPO_ROOT

from .. import client, settings
from ..failures import Failure, Guard, describe, is_authorization_violation, one_line, unreachable


def default_config_dir() -> Path:
    local = Path("configs")
    return local if (local / "policies.json").is_file() else REPO_ROOT / "configs"


def fail(message: str, code: int = 1) -> int:
    print(f"wf: {message}", file=sys.stderr)
    return code


async def connect(args: argparse.Namespace, role: str = "client", url: str | None = None) -> Client:
    """A connection as `role` (`url`, else its `<data-dir>/<role>.env` unless WF_NATS_URL is set) that
    fails in one line: each server is tried twice, then Failure; nats-py's errors go to our Guard."""
    data_dir = Path(args.data_dir)
    url = url or client.nats_url(data_dir, role)
    guard = Guard(role, url, data_dir, debug=getattr(args, "debug", False))
    args.guards = [*getattr(args, "guards", []), guard]
    try:
        nc = await nats.connect(server_urls(url), name="wf-cli", allow_reconnect=False, max_reconnect_attempts=1,
                                reconnect_time_wait=0, connect_timeout=3, tls=tls_context(settings.nats_ca()), error_cb=guard.error_cb)
        guard.connected = True
        return nc
    except nats.errors.NoServersError as exc:  # every attempt failed: the last one's error says why
        raise unreachable(url, describe(guard.last_error())) from exc
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        if is_authorization_violation(exc):
            raise Failure(f"NATS at {redact(url)} refused the credential (authorization violation)",
                          f"use WF_NATS_URL from {data_dir / (role + '.env')} of the running `wf up` "
                          "(each `wf up` makes new passwords)") from exc
        raise unreachable(url, describe(exc)) from exc


# What to do about each of the contract's error replies (the message says the cause).
ERROR_HINTS = {
    400: "change the request and send it again",
    403: "ask a person the workflow's requireApproval policy allows (`wf status ID` shows who approved), or use "
         "such a person's credential: WF_NATS_URL from their users/NAME.env",
    404: "check the id: `wf ls` lists recent workflows",
    409: "`wf status ID` shows where it is",
    412: "`wf status ID` shows its verdict; past the exec window, submit it again",
    423: "an emergency stop holds that WorkReq name: `wf es go NAME` (operator credential) lifts it",
    429: "wait for your earlier requests to finish, then retry",
    503: "a dependency is down or the policy configuration is invalid: see `wf up`'s log, then retry",
}


def error_text(err: client.WfError) -> str:
    extra = f" (id {err.body['id']}, verdict {err.body.get('verdict')})" if "id" in err.body else ""
    hint = ERROR_HINTS.get(err.code, "see `wf up`'s log" if err.code != 413 else "")
    return one_line(f"error {err.code}: {err.message}{extra}" + (f"; {hint}" if hint else ""))
