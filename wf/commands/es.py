"""`wf es stop|pause|go NAME [--why TEXT]` and `wf es show`: the emergency stops in KV `wf_es`, with
the operator's credential (services/safety/ enforces them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from schemas import subjects
from services.common.topology import ES_BUCKET
from services.safety.gate import utc_now
from services.safety.stops import emergency_stop_changes, enforced_emergency_stops, read_emergency_stops

from ..failures import NEEDS, Failure, credential_hint
from .common import connect, fail


def _url_user(nc: Client) -> str:
    """The user name this connection authenticated with (`admin` when its URL names none)."""
    url = nc.connected_url
    return (url.username if url is not None and url.username else "") or "admin"


async def cmd_es(args: argparse.Namespace) -> int:
    """Emergency stops in KV `wf_es` (operator role): `stop NAME`, `pause NAME`, `go NAME`, `show`."""
    nc = await connect(args, role="operator")
    try:
        try:
            await nc.jetstream().key_value(ES_BUCKET)  # the operator's view of the bucket: refused to clients
        except (nats.js.errors.ServiceUnavailableError, nats.errors.TimeoutError) as exc:
            # what a credential without the operator's rights may see instead of a permissions violation
            raise Failure(f"the emergency-stop bucket {ES_BUCKET} is out of this credential's reach ({type(exc).__name__})",
                          f"{NEEDS['operator']}: {credential_hint('operator', Path(args.data_dir))}") from exc
        if args.action in ("stop", "go", "pause"):
            if not args.name:
                return fail(f"wf es {args.action} needs a WorkReq name")
            # to the bucket's subject, as `kv.put` would, with who and why: a person's write passes
            # wf-intake's gate, which records the server's identity in place of this claim
            # (services/safety/gate.py); an admin's, inside WF, is recorded as it says
            headers = {"Wf-By": _url_user(nc), "Wf-At": utc_now()}
            if args.why:
                headers["Wf-Why"] = args.why
            await nc.jetstream().publish(subjects.kv(ES_BUCKET, args.name), args.action.encode(), headers=headers)
            print(f"{args.name} {args.action}")
            return 0
        # what the services enforce (wf-intake's STATS), else the bucket read as they read it
        # (services/safety/stops.py); a value other than exactly `go` is shown as the stop it is
        values = await enforced_emergency_stops(nc)
        if values is None:
            values = await read_emergency_stops(nc.jetstream(), ES_BUCKET)
            print("(no wf-intake answered: read from KV wf_es)", file=sys.stderr)
        changes = await emergency_stop_changes(nc)
        for key, value in sorted(values.items()):
            line = f"{key} {value}" if value in ("go", "pause", "stop") else f"{key} stop (value {value!r})"
            change = changes.get(key)
            if change:
                why = f": {change['why']}" if change["why"] else ""
                line += f"  (by {change['by']} at {change['at']}{why})"
            print(line)
        print("(any name not listed is stopped)", file=sys.stderr)
        return 0
    finally:
        await nc.close()
