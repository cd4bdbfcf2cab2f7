"""Who sent a request: the identity the server authenticated, never a claim in the body.

People live in the PEOPLE account and reach `wf.api.*` through an import with `share: true`, so the
server adds `Nats-Request-Info` (`{"acc": "PEOPLE", "user": NAME, ...}`) to every request it carries
across, replacing any header of that name the sender set (tests/integration/test_gate_attacks.py).
A request without it came from inside WF, where only the services and admins connect: an admin's
`wf` command names itself in `Wf-Actor` (WF is trusted; the name is a courtesy for the record, the
server cannot establish it inside one account), anything else is `admin`."""

from __future__ import annotations

import json
from dataclasses import dataclass

from schemas import is_token

REQUEST_INFO_HEADER = "Nats-Request-Info"
ACTOR_HEADER = "Wf-Actor"  # set by admins' commands inside WF only; ignored on a person's request
PEOPLE = "PEOPLE"
ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    name: str  # the person's user name, or `admin` (or an admin's own name) from inside WF
    person: bool  # authenticated by the server in PEOPLE (False: a request from inside WF)


def caller(headers: dict[str, str] | None) -> Caller:
    """The caller of a request, from its headers."""
    headers = headers or {}
    info = headers.get(REQUEST_INFO_HEADER)
    if info is not None:
        try:
            parsed = json.loads(info)
            account, user = parsed.get("acc"), parsed.get("user")
        except (ValueError, AttributeError):
            account, user = None, None
        if account == PEOPLE and isinstance(user, str) and user:
            return Caller(user, True)
        if account not in (None, "WF"):
            # from an account we do not know: never act as anyone in particular
            return Caller(f"unknown:{account}", True)
    actor = headers.get(ACTOR_HEADER, "")
    return Caller(actor if actor and len(actor) <= 64 and is_token(actor) else ADMIN, False)
