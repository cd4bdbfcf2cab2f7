"""`wf history ID [--json]`: a workflow's timeline, one line per event in WF_EVENTS, with who took each step.

The people who act are recorded in the events themselves (`by` on `submitted`, `exec_requested`,
`cancel_requested`, `approval`, `denied`, `paused` and `resumed`: the user the NATS server authenticated,
services/common/identity.py); every other step is taken by a service, named after the one that publishes it (docs/architecture.md, Events).
It reads with any credential that may read WF_EVENTS (the client's reads PEOPLE's view of it), through
an ordered consumer from the workflow's first event up to the last one stored when it started.

Events are read as plain JSON, not through the wire types: an event of a kind this release does not
know still shows (its `type` as the step, its `by` as the actor, its other fields as the detail).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.client import Client

from schemas import is_token, subjects
from services.common.bus import follow_workflow, last_event
from services.common.topology import SERVICE_NAMES, SERVICE_ROLES

from .failures import Failure

_SERVICE_NAME = dict(zip(SERVICE_ROLES, SERVICE_NAMES, strict=True))
POLICY, EXECUTOR, RUNNER = _SERVICE_NAME["policy"], _SERVICE_NAME["executor"], _SERVICE_NAME["jobrunner"]
# The actor of each kind of event no person asks for: the service that publishes it.
SERVICE_ACTORS = {
    "approved": POLICY,
    "rejected": POLICY,
    "workflow.started": EXECUTOR,
    "workflow.ended": EXECUTOR,
    "block.started": EXECUTOR,
    "block.ended": EXECUTOR,
    "job.started": RUNNER,
    "job.completed": RUNNER,
    "job.failed": RUNNER,
}
NEXT_MSG_TIMEOUT_S = 5.0  # between two stored events: the stream answers within milliseconds
# Fields of an unknown event that are not worth a detail (shown elsewhere on the line, or bulky).
_NOT_DETAIL = frozenset({"type", "id", "at", "by", "req", "req_stored"})


def iso_ms(at: float) -> str:
    """Unix seconds as UTC ISO 8601 with milliseconds: 2024-05-01T12:00:00.123Z."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _job_names(submitted: dict[str, Any]) -> dict[tuple[int, int], str]:
    """(block, job) -> job name, from the WorkReq the `submitted` event carries (a WorkReq kept in
    the object store, too large for one message, is out of a person's reach: its jobs go unnamed)."""
    req = submitted.get("req") or {}
    return {(b, j): str(job.get("name", "")) for b, block in enumerate(req.get("blocks") or [])
            for j, job in enumerate(block.get("jobs") or [])}


def _flags(ev: dict[str, Any], *names: str) -> str:
    return "".join(f", {name}" for name in names if ev.get(name))


def entry(ev: dict[str, Any], job_names: dict[tuple[int, int], str] | None = None) -> dict[str, Any]:
    """One event as a timeline entry: `at` (UTC ISO, ms), `step`, `actor` ("" when not recorded: events
    older than the `by` field), `detail` (one line), and the event's own fields that matter."""
    kind = str(ev.get("type", "?"))
    actor = SERVICE_ACTORS.get(kind) or str(ev.get("by") or "")
    step, detail, extra = kind, "", {}
    match kind:
        case "submitted":
            name = (ev.get("req") or {}).get("name") or (ev.get("req_stored") or {}).get("workreq", "")
            detail, extra = f"WorkReq {name}", {"workreq": name}
        case "rejected":
            detail, extra = str(ev.get("reason", "")), {"reason": ev.get("reason", "")}
        case "workflow.ended":
            step = f"workflow.{ev.get('status')}"
            stopped_by = ev.get("stopped_by") or ""
            detail = (f"stopped by {stopped_by}" if stopped_by else "ran to its end") + _flags(
                ev, "had_errors", "was_es_stopped")
            extra = {key: ev.get(key) for key in ("status", "had_errors", "was_es_stopped", "stopped_by")}
        case "block.started" | "block.ended":
            state = "started" if kind == "block.started" else str(ev.get("status"))
            step = f"block.{state}"
            detail = f"block {ev.get('block')}" + _flags(ev, "has_error")
            extra = {key: ev[key] for key in ("block", "status", "has_error") if key in ev}
        case "job.started" | "job.completed" | "job.failed":
            state = kind.removeprefix("job.")
            if state == "failed" and ev.get("retrying"):
                state = "retrying"
            step = f"job.{state}"
            block, job, attempt = ev.get("block"), ev.get("job"), ev.get("attempt", 1)
            name = (job_names or {}).get((block, job), "")  # type: ignore[arg-type]
            detail = f"{block}.{job}" + (f" {name}" if name else "") + f" attempt {attempt}"
            if state in ("failed", "retrying"):
                detail += (" (fatal)" if ev.get("fatal") else "") + f": {ev.get('error', '')}"
            extra = {"block": block, "job": job, "name": name, "state": state, "attempt": attempt}
            if "error" in ev:
                extra["error"] = ev["error"]
        case "approved":
            needed = ev.get("approvals_needed") or 0
            if needed:
                detail = f"needs {needed} approvals ({ev.get('approver_role') or 'client'}s other than the submitter)"
                extra = {"approvals_needed": needed, "approver_role": ev.get("approver_role", "")}
        case "approval" | "denied":  # the two-person rule: who approved or denied, and why
            comment = str(ev.get("comment") or "")
            detail, extra = comment, {"comment": comment}
        case "paused" | "resumed":  # numbered: pause 1, resume 1, pause 2, ...
            n = ev.get("n")
            detail = f"{'pause' if kind == 'paused' else 'resume of pause'} {n}" if n else ""
            extra = {"n": n}
        case "exec_requested" | "cancel_requested" | "workflow.started":
            pass
        case _:  # a kind of event this release does not know: its fields, as they are
            rest = {key: value for key, value in ev.items() if key not in _NOT_DETAIL}
            detail = json.dumps(rest, separators=(",", ":")) if rest else ""
    at = ev.get("at")
    when = iso_ms(float(at)) if isinstance(at, int | float) else ""
    return {"at": when, "step": step, "actor": actor, "detail": " ".join(detail.split()), **extra}


def line(item: dict[str, Any]) -> str:
    """A timeline entry as one text line: time, step, actor ("-" when not recorded), detail."""
    return f"{item['at']:<24}  {item['step']:<18}  {item['actor'] or '-':<12}  {item['detail']}".rstrip()


def timeline(events: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The entries of a workflow's events (in stream order; its first is its `submitted`)."""
    names: dict[tuple[int, int], str] = {}
    for ev in events:
        if ev.get("type") == "submitted":
            names = _job_names(ev)
        yield entry(ev, names)


def _decode(data: bytes) -> dict[str, Any]:
    try:
        ev = json.loads(data)
    except ValueError:
        return {"type": "undecodable"}
    return ev if isinstance(ev, dict) else {"type": "undecodable"}


async def read_events(nc: Client, wf_id: str) -> list[dict[str, Any]]:
    """Every event stored for the workflow, in stream order. Failure when no workflow has that id."""
    if not is_token(wf_id) or len(wf_id) > 128:  # never a subject wildcard: `*` would read every workflow
        raise Failure(f"{wf_id!r} is not a workflow id", "check the id: `wf ls` lists recent workflows")
    js = nc.jetstream()
    if await last_event(js, subjects.event(wf_id, "submitted")) is None:
        raise Failure(f"unknown id {wf_id!r}", "check the id: `wf ls` lists recent workflows")
    follower = await follow_workflow(js, wf_id)
    events = []
    try:
        while True:
            msg = await follower.next(NEXT_MSG_TIMEOUT_S)
            if msg is None:
                raise nats.errors.TimeoutError
            events.append(_decode(msg.data))
            if msg.metadata.num_pending == 0:  # the last one stored when the consumer was made
                return events
    finally:
        await follower.stop()


async def run(args: argparse.Namespace, connect: Callable[[argparse.Namespace], Awaitable[Client]]) -> int:
    """`wf history ID [--json]`: one line per event (with --json, one JSON object per line)."""
    nc = await connect(args)
    try:
        events = await read_events(nc, args.id)
    finally:
        await nc.close()
    for item in timeline(events):
        print(json.dumps(item) if args.json else line(item))
    sys.stdout.flush()
    return 0
