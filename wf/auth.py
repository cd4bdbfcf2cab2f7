"""Roles, their permissions, and the nats-server authorization that enforces them.

The server, not convention, keeps each part to its job: only wf-policy may publish verdicts, only
the executor job commands and block/workflow events, only runners job events, only wf-status
writes `wf_status`; clients may call `wf.api.*` and read `wf_status` and `WF_EVENTS`; operators
may also flip emergency stops; only the admin role (`wf up` itself) may create, delete or purge
streams, consumers and buckets. See docs/security.md for the table and the threat model."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from services.common.topology import (
    BUCKETS_BUCKET,
    CONFIG_BUCKET,
    ES_BUCKET,
    EVENTS_STREAM,
    EXECUTOR_CONSUMER,
    IDEMPOTENCY_BUCKET,
    JOBS_STREAM,
    LEASES_BUCKET,
    POLICY_CONSUMER,
    RUNNER_CONSUMER,
    STATUS_BUCKET,
    STATUS_CONSUMER,
    UPLOADS_BUCKET,
    WORKREQ_BUCKET,
)

INBOX = "_INBOX.>"
FLOW_CONTROL = "$JS.FC.>"  # replies to a push (ordered) consumer's flow control
MICRO = "$SRV.>"


def js_read(stream: str) -> list[str]:
    """Get messages of a stream (direct or not) and its info."""
    return [f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>",
            f"$JS.API.STREAM.MSG.GET.{stream}"]


def js_follow(stream: str) -> list[str]:
    """Create ordered or ephemeral consumers on a stream (they expire on their own: nobody deletes)."""
    return [f"$JS.API.CONSUMER.CREATE.{stream}", f"$JS.API.CONSUMER.CREATE.{stream}.>",
            f"$JS.API.CONSUMER.INFO.{stream}.>", FLOW_CONTROL]


# Creating a consumer by name creates it or *updates* it: nobody but the admin may name one of ours.
DURABLES = [(EVENTS_STREAM, POLICY_CONSUMER), (EVENTS_STREAM, EXECUTOR_CONSUMER), (EVENTS_STREAM, STATUS_CONSUMER),
            (JOBS_STREAM, RUNNER_CONSUMER)]
PROTECTED = [s for stream, name in DURABLES
             for s in (f"$JS.API.CONSUMER.CREATE.{stream}.{name}", f"$JS.API.CONSUMER.CREATE.{stream}.{name}.>")]
PROTECTED.append("$JS.API.CONSUMER.DURABLE.CREATE.>")


def js_pull(stream: str, consumer: str) -> list[str]:
    """Work from one durable pull consumer: fetch and acknowledge."""
    return [f"$JS.API.CONSUMER.INFO.{stream}.{consumer}", f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            f"$JS.ACK.{stream}.{consumer}.>"]


def kv_read(bucket: str) -> list[str]:
    return js_read(f"KV_{bucket}") + js_follow(f"KV_{bucket}")


def kv_write(bucket: str) -> list[str]:
    return [f"$KV.{bucket}.>"]


def obj_read(bucket: str) -> list[str]:
    """Get objects: their meta message, then their chunks through an ordered consumer (nats-py finds
    the chunks' stream by subject: STREAM.NAMES)."""
    return [*js_read(f"OBJ_{bucket}"), *js_follow(f"OBJ_{bucket}"), "$JS.API.STREAM.NAMES"]


def obj_write(bucket: str) -> list[str]:
    """Put objects (a failed put purges its own chunks)."""
    return [*obj_read(bucket), f"$O.{bucket}.>", f"$JS.API.STREAM.PURGE.OBJ_{bucket}"]


@dataclass(frozen=True)
class Role:
    name: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()


def _role(name: str, publish: list[str], subscribe: list[str]) -> Role:
    deny = () if name == "admin" else tuple(PROTECTED)
    return Role(name, tuple(dict.fromkeys([*publish, INBOX])), tuple(dict.fromkeys([*subscribe, INBOX])), deny)


CLIENT_PUBLISH = ["wf.api.>", MICRO, *js_read(EVENTS_STREAM), *js_follow(EVENTS_STREAM), *kv_read(STATUS_BUCKET)]

ROLES: dict[str, Role] = {
    role.name: role
    for role in [
        _role("admin", [">"], [">"]),
        _role("intake",
              ["wf.evt.*.submitted", "wf.evt.*.exec_requested", "wf.evt.*.cancel_requested",
               *js_read(EVENTS_STREAM), *kv_read(CONFIG_BUCKET), *kv_read(ES_BUCKET),
               *kv_read(IDEMPOTENCY_BUCKET), *kv_write(IDEMPOTENCY_BUCKET), *kv_read(UPLOADS_BUCKET),
               *kv_write(UPLOADS_BUCKET), *obj_write(WORKREQ_BUCKET)],
              ["wf.api.submit", "wf.api.exec", "wf.api.cancel", "wf.api.upload", "wf.evt.*.approved",
               "wf.evt.*.rejected", MICRO]),
        _role("policy",
              ["wf.evt.*.approved", "wf.evt.*.rejected", *js_read(EVENTS_STREAM),
               *js_pull(EVENTS_STREAM, POLICY_CONSUMER), *kv_read(CONFIG_BUCKET), *kv_write(CONFIG_BUCKET),
               *obj_read(WORKREQ_BUCKET)],
              [MICRO]),
        _role("executor",
              ["wf.evt.*.workflow.>", "wf.evt.*.block.>", "wf.cmd.job.>", *js_read(EVENTS_STREAM),
               *js_follow(EVENTS_STREAM), *js_pull(EVENTS_STREAM, EXECUTOR_CONSUMER), *js_read(JOBS_STREAM),
               *kv_read(ES_BUCKET), *kv_read(BUCKETS_BUCKET),
               *kv_write(BUCKETS_BUCKET), *kv_read(LEASES_BUCKET), *kv_write(LEASES_BUCKET), *obj_read(WORKREQ_BUCKET)],
              [MICRO]),
        _role("jobrunner",
              ["wf.evt.*.job.>", *js_read(EVENTS_STREAM), *js_follow(EVENTS_STREAM),
               *js_pull(JOBS_STREAM, RUNNER_CONSUMER), *kv_read(ES_BUCKET), *kv_read(BUCKETS_BUCKET),
               *kv_write(BUCKETS_BUCKET), *obj_read(WORKREQ_BUCKET)],
              [MICRO]),
        _role("status",
              [*js_read(EVENTS_STREAM), *js_follow(EVENTS_STREAM), *js_pull(EVENTS_STREAM, STATUS_CONSUMER),
               *kv_read(STATUS_BUCKET), *kv_write(STATUS_BUCKET), *obj_read(WORKREQ_BUCKET)],
              ["wf.api.status", MICRO]),
        _role("client", CLIENT_PUBLISH, ["wf.evt.>"]),
        _role("operator", [*CLIENT_PUBLISH, *kv_read(ES_BUCKET), *kv_write(ES_BUCKET), *kv_read(BUCKETS_BUCKET),
                           *kv_write(BUCKETS_BUCKET)], ["wf.evt.>"]),
    ]
}
SERVICE_ROLES = ("intake", "policy", "executor", "jobrunner", "status")


def new_credentials() -> dict[str, str]:
    """A random password per role (never in the repo, never logged)."""
    return {name: secrets.token_urlsafe(24) for name in ROLES}


def save_credentials(path: Path, credentials: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(credentials, fh)


def authorization_block(credentials: dict[str, str]) -> str:
    """The `authorization { users = [...] }` block of a nats-server configuration."""
    users = []
    for name, role in ROLES.items():
        users.append(
            "    {user: %s, password: %s, permissions: {publish: {allow: %s, deny: %s}, subscribe: {allow: %s}}}"
            % (json.dumps(name), json.dumps(credentials[name]), json.dumps(list(role.publish)),
               json.dumps(list(role.deny_publish)), json.dumps(list(role.subscribe)))
        )
    return "authorization {\n  users = [\n" + ",\n".join(users) + "\n  ]\n}\n"


def role_url(host_port: str, role: str, credentials: dict[str, str]) -> str:
    return f"nats://{role}:{credentials[role]}@{host_port}"
