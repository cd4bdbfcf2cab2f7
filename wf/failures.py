"""How a `wf` command fails: one line on stderr, `wf: <cause>; <what to do>`, and a non-zero exit.

The traceback is for `--debug` (or WF_DEBUG=1). nats-py reports what happens on a connection
through its error callback (its default one logs a traceback per reconnect attempt): `Guard` is
ours, recording those errors quietly and noticing a permissions violation, which nats-py only
reports there (the request itself would then wait for its timeout): it ends the command at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import traceback
from pathlib import Path

import nats.errors
import nats.js.errors

from services.common.lifecycle import redact

from .client import Unreachable

# What each role's credential is for, as the line that names the one a command needs says it.
NEEDS = {
    "client": "this command needs the client credential",
    "operator": "emergency stops need the operator credential",
    "admin": "`wf setup` needs the admin credential",
}


class Failure(Exception):
    """A failure explained: its cause and what to do, shown as `wf: <cause>; <what to do>`."""

    def __init__(self, cause: str, todo: str) -> None:
        super().__init__(f"{cause}; {todo}")
        self.cause = cause
        self.todo = todo


def one_line(text: str) -> str:
    return " ".join(text.split())


def credential_hint(role: str, data_dir: Path) -> str:
    return f"use {data_dir / (role + '.env')} or WF_NATS_URL from it"


def is_permissions_violation(exc: BaseException) -> bool:
    return isinstance(exc, nats.errors.Error) and "permissions violation" in str(exc).lower()


def is_authorization_violation(exc: BaseException) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and "authorization violation" in str(exc).lower())


def permission_denied(violation: BaseException, role: str, data_dir: Path) -> Failure:
    """nats-py's text is `nats: permissions violation for publish to "<subject>"` (lower-cased)."""
    match = re.search(r"permissions violation for (\w+) to \"?([^\"\s]+)", str(violation), re.IGNORECASE)
    if match:
        verb = {"publish": "publish", "subscription": "subscribe"}.get(match.group(1).lower(), match.group(1))
        what = f"this credential may not {verb} to {match.group(2)}"
    else:
        what = f"this credential may not do that ({one_line(str(violation))})"
    return Failure(f"{what} (a permissions violation, says the NATS server)",
                   f"{NEEDS.get(role, f'this command needs the {role} credential')}: {credential_hint(role, data_dir)}")


def unreachable(url: str, cause: str) -> Failure:
    return Failure(f"cannot reach NATS at {redact(url)} ({cause})",
                   "is `wf up` running? start it, or point WF_NATS_URL (or --data-dir) at a running one")


def describe(exc: BaseException | None) -> str:
    """A connection error in a few words: 'connection refused', 'no answer within 3 s', ..."""
    if exc is None:
        return "no server answered"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "no answer in time"
    return one_line(str(exc)) or type(exc).__name__


LOST = (nats.errors.StaleConnectionError, OSError)  # UnexpectedEOF is a StaleConnectionError


class Guard:
    """The error callback of one CLI connection (to `nats.connect`'s error_cb): records errors (a
    traceback each with --debug) and, once connected, ends the command at the first error that dooms
    it, a permissions violation or a lost connection, by cancelling the command's task: the CLI's
    `_run` then raises `fatal`, the line naming the cause and what to do."""

    def __init__(self, role: str, url: str, data_dir: Path, debug: bool) -> None:
        self.role = role
        self.url = url
        self.data_dir = data_dir
        self.debug = debug
        self.connected = False  # set once nats.connect returned: before, errors are connect attempts
        self.errors: list[BaseException] = []
        self.fatal: Failure | None = None
        self.task = asyncio.current_task()

    async def error_cb(self, exc: Exception) -> None:
        self.errors.append(exc)
        if self.debug:
            print(f"wf: nats reported {exc!r}", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
        if self.fatal is not None or not self.connected:
            return
        if is_permissions_violation(exc):
            self.fatal = permission_denied(exc, self.role, self.data_dir)
        elif isinstance(exc, LOST):
            self.fatal = Failure(f"the connection to NATS at {redact(self.url)} was lost ({describe(exc)})",
                                 "is `wf up` still running? then retry")
        if self.fatal is not None and self.task is not None and not self.task.done():
            self.task.cancel()

    def last_error(self) -> BaseException | None:
        return self.errors[-1] if self.errors else None


def explain(exc: BaseException) -> str:
    """Any exception a command let through, as `<cause>; <what to do>` (one line)."""
    if isinstance(exc, Failure | Unreachable):
        text = str(exc)
    elif is_authorization_violation(exc):
        text = ("the NATS server refused the credential (authorization violation); use WF_NATS_URL from the "
                "<role>.env files of the running `wf up` (each `wf up` makes new passwords)")
    elif isinstance(exc, nats.errors.NoServersError):
        text = "cannot reach NATS (no server answered); is `wf up` running? start it, or point WF_NATS_URL at a running one"
    elif is_permissions_violation(exc):
        text = f"{describe(exc)}; use the credential of the role this needs (client.env, operator.env or admin.env)"
    elif isinstance(exc, nats.js.errors.BucketNotFoundError | nats.js.errors.NotFoundError):
        text = (f"a JetStream stream or bucket is missing ({describe(exc)}); run `wf setup` against this server "
                "(`wf up` does it)")
    elif isinstance(exc, nats.js.errors.ServiceUnavailableError):
        text = "JetStream is not available on this NATS server; enable it (nats-server -js), or use `wf up`"
    elif isinstance(exc, nats.errors.NoRespondersError):
        text = "nothing answered on the NATS server (no responders); is `wf up` running, with JetStream?"
    elif isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.StaleConnectionError | nats.errors.UnexpectedEOF):
        text = f"the connection to NATS was lost ({type(exc).__name__}); is `wf up` still running? then retry"
    elif isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError | TimeoutError):
        text = "NATS did not answer in time; is `wf up` (or your NATS server, with JetStream) running? then retry"
    elif isinstance(exc, OSError) and exc.filename is not None:
        text = f"cannot use {exc.filename} ({describe(exc)}); check the path"
    elif isinstance(exc, json.JSONDecodeError):
        text = f"a reply was not JSON ({exc}); is WF_NATS_URL the wf system's server? run with --debug for the traceback"
    else:
        text = f"unexpected {type(exc).__name__}: {exc}; run with --debug for the traceback"
    return one_line(text)
