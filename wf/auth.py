"""Accounts, roles, their permissions, and the nats-server configuration that enforces them.

Two NATS accounts keep people away from the machinery (docs/security.md has the table and why):

- **WF** holds the services, their streams, consumers, buckets and inboxes, and the admin. Nothing
  of it is visible outside the account except what it exports.
- **PEOPLE** holds every person (the `client` and `operator` roles, and people added with
  `wf user add`). It imports only the request API (`wf.api.>`, with the caller's identity shared:
  the server adds `Nats-Request-Info` to each request), the micro framework's `$SRV.>`, emergency
  stop writes (`$KV.wf_es.>`, operators only), and read-only *views*, streams of its own that the
  server keeps in step with WF: `WF_EVENTS` (every stored event, republished by WF's stream after
  it is stored, so also live on `wf.evt.>`), `KV_wf_status` and `KV_wf_es` (mirrors). A person's
  consumer lives on a view: it can neither name nor reach a service's consumer, inbox or stream.

Inside WF the server still keeps each service to its job: only wf-policy may publish verdicts,
only the executor job commands and block/workflow events, only runners job events, only wf-status
writes `wf_status`; only the admin creates, deletes or purges streams, consumers and buckets."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from schemas import subjects
from schemas.subjects import (
    ES_GATE_MIRROR_PREFIX,
    ES_GATE_PREFIX,
    VIEW_DELIVER_PREFIX,
    VIEW_EVENTS_PREFIX,
    VIEW_JS_API,
    js_ack,
    js_api,
)
from services.common.topology import (
    BUCKETS_BUCKET,
    CONFIG_BUCKET,
    ES_BUCKET,
    EVENTS_STREAM,
    EXECUTOR_CONSUMER,
    IDEMPOTENCY_BUCKET,
    JOBS_STREAM,
    LEASES_BUCKET,
    OUTPUT_BUCKET,
    PEOPLE_BUCKET,
    POLICY_CONSUMER,
    RUNNER_CONSUMER,
    SERVICE_INBOXES,
    SERVICE_NAMES,
    SERVICE_ROLES,
    STATUS_BUCKET,
    STATUS_CONSUMER,
    UPLOADS_BUCKET,
    VIEW_MAX_CONSUMERS,
    VIEW_MIRRORS,
    WORKREQ_BUCKET,
)

from . import settings

WF_ACCOUNT = "WF"
PEOPLE_ACCOUNT = "PEOPLE"
INBOX = subjects.INBOX_ALL
FLOW_CONTROL = subjects.JS_FLOW_CONTROL  # replies to a push (ordered) consumer's flow control
MICRO = subjects.MICRO_ALL
IMPORT_REPLIES = subjects.IMPORT_REPLIES_ALL


def js_read(stream: str) -> list[str]:
    """Get messages of a stream (direct or not) and its info."""
    return [js_api("STREAM", "INFO", stream), js_api("DIRECT", "GET", stream), js_api("DIRECT", "GET", stream, ">"),
            js_api("STREAM", "MSG", "GET", stream)]


def js_follow(stream: str) -> list[str]:
    """Create ordered or ephemeral consumers on a stream (they expire on their own)."""
    return [js_api("CONSUMER", "CREATE", stream), js_api("CONSUMER", "CREATE", stream, ">"),
            js_api("CONSUMER", "INFO", stream, ">"), FLOW_CONTROL]


def js_pull_own(stream: str) -> list[str]:
    """Pull from and acknowledge consumers on a stream (nats.js's ordered consumer pulls). Nobody but
    the server deletes them: an unused one goes after VIEW_CONSUMER_INACTIVE_S."""
    return [js_api("CONSUMER", "MSG", "NEXT", stream, ">"), js_ack(stream, ">"), js_ack("*", "*", stream, ">")]


# Creating a consumer by name creates it or *updates* it: no service may name another's durable.
DURABLES = [(EVENTS_STREAM, POLICY_CONSUMER), (EVENTS_STREAM, EXECUTOR_CONSUMER), (EVENTS_STREAM, STATUS_CONSUMER),
            (JOBS_STREAM, RUNNER_CONSUMER)]
PROTECTED = [s for stream, name in DURABLES
             for s in (js_api("CONSUMER", "CREATE", stream, name), js_api("CONSUMER", "CREATE", stream, name, ">"))]
PROTECTED.append(js_api("CONSUMER", "DURABLE", "CREATE", ">"))


def js_pull(stream: str, consumer: str) -> list[str]:
    """Work from one durable pull consumer: fetch and acknowledge."""
    return [js_api("CONSUMER", "INFO", stream, consumer), js_api("CONSUMER", "MSG", "NEXT", stream, consumer),
            js_ack(stream, consumer, ">")]


def kv_read(bucket: str) -> list[str]:
    return js_read(f"KV_{bucket}") + js_follow(f"KV_{bucket}")


def kv_write(bucket: str) -> list[str]:
    return [subjects.kv_all(bucket)]


def obj_read(bucket: str) -> list[str]:
    """Get objects: their meta message, then their chunks through an ordered consumer (nats-py finds
    the chunks' stream by subject: STREAM.NAMES)."""
    return [*js_read(f"OBJ_{bucket}"), *js_follow(f"OBJ_{bucket}"), js_api("STREAM", "NAMES")]


def obj_write(bucket: str) -> list[str]:
    """Put objects (a failed put purges its own chunks)."""
    return [*obj_read(bucket), subjects.obj_all(bucket), js_api("STREAM", "PURGE", f"OBJ_{bucket}")]


@dataclass(frozen=True)
class Role:
    name: str
    account: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    deny_publish: tuple[str, ...] = ()


def _role(name: str, account: str, publish: list[str], subscribe: list[str], deny: list[str] | None = None) -> Role:
    """A service receives only on its own inbox prefix (SERVICE_INBOXES): no service reads another's
    replies or deliveries, and none can publish into another's (`_INBOX.>` is not `_INBOX_executor.>`).
    It answers on `_INBOX.>` (the admin's commands) and `_R_.>` (people's requests, as the import
    renames their replies). (nats-server's `allow_responses` would narrow that to the requests it
    received, but the server then tracks the reply subject of every message a service receives,
    every JetStream delivery included: measured, it cost the server memory and CPU on each job.)"""
    deny_list = deny if deny is not None else ([] if name == "admin" else PROTECTED)
    own_inbox = SERVICE_INBOXES.get(_SERVICE_NAME.get(name, ""))
    if own_inbox:
        return Role(name, account, tuple(dict.fromkeys([*publish, INBOX])),
                    tuple(dict.fromkeys([*subscribe, f"{own_inbox}.>"])), tuple(deny_list))
    return Role(name, account, tuple(dict.fromkeys([*publish, INBOX])), tuple(dict.fromkeys([*subscribe, INBOX])),
                tuple(deny_list))


_SERVICE_NAME = dict(zip(SERVICE_ROLES, SERVICE_NAMES, strict=True))  # role -> its micro service's name

VIEW_STREAMS = [EVENTS_STREAM, *(f"KV_{bucket}" for bucket in VIEW_MIRRORS)]


def _view_read(stream: str) -> list[str]:
    return [*js_read(stream), *js_follow(stream), *js_pull_own(stream)]


# A person reads the views (and finds WF_EVENTS by subject, as nats-py's js.subscribe does) and
# calls the API; nothing else. Durable consumers are theirs to make on a view, bounded like any other.
PERSON_PUBLISH = [subjects.ALL_API, MICRO, js_api("INFO"), js_api("STREAM", "NAMES"),
                  *_view_read(EVENTS_STREAM), *_view_read(f"KV_{STATUS_BUCKET}")]
# What a person may never publish in their own account: into the views' inputs (the live events the
# views are fed with, the mirrors' deliveries and the JetStream API they use in WF).
PERSON_DENY = [subjects.ALL_EVENTS, f"{VIEW_DELIVER_PREFIX}.>", f"{VIEW_JS_API}.CONSUMER.>", f"{VIEW_JS_API}.STREAM.>"]
OPERATOR_PUBLISH = [*PERSON_PUBLISH, *_view_read(f"KV_{ES_BUCKET}"), *kv_write(ES_BUCKET),
                    f"{VIEW_JS_API}.{subjects.kv_all(ES_BUCKET)}"]
PERSON_ROLES = ("client", "operator")

ROLES: dict[str, Role] = {
    role.name: role
    for role in [
        _role("admin", WF_ACCOUNT, [">"], [">"]),
        _role("intake", WF_ACCOUNT,
              [*(subjects.any_workflow(kind) for kind in ("submitted", "exec_requested", "cancel_requested",
                                                         "approval.*", "denied", "paused", "resumed")),
               *kv_read(PEOPLE_BUCKET),
               *js_read(EVENTS_STREAM), *kv_read(CONFIG_BUCKET), *kv_read(ES_BUCKET),
               *kv_read(IDEMPOTENCY_BUCKET), *kv_write(IDEMPOTENCY_BUCKET), *kv_read(UPLOADS_BUCKET),
               *kv_write(UPLOADS_BUCKET), *obj_write(WORKREQ_BUCKET), *kv_write(ES_BUCKET), IMPORT_REPLIES],
              [*(subjects.api(endpoint) for endpoint in ("submit", "exec", "cancel", "upload", "approve", "deny",
                                                          "pause", "resume")),
               subjects.any_workflow("approved"),
               subjects.any_workflow("rejected"), f"{ES_GATE_PREFIX}.>", f"{ES_GATE_MIRROR_PREFIX}.>", MICRO]),
        _role("policy", WF_ACCOUNT,
              [subjects.any_workflow("approved"), subjects.any_workflow("rejected"), *js_read(EVENTS_STREAM),
               *js_pull(EVENTS_STREAM, POLICY_CONSUMER), *kv_read(CONFIG_BUCKET), *kv_write(CONFIG_BUCKET),
               *obj_read(WORKREQ_BUCKET), IMPORT_REPLIES],
              [MICRO]),
        _role("executor", WF_ACCOUNT,
              [subjects.any_workflow("workflow.>"), subjects.any_workflow("block.>"), subjects.ALL_JOB_COMMANDS,
               *js_read(EVENTS_STREAM),
               *js_follow(EVENTS_STREAM), *js_pull(EVENTS_STREAM, EXECUTOR_CONSUMER), *js_read(JOBS_STREAM),
               *kv_read(ES_BUCKET), *kv_read(BUCKETS_BUCKET),
               *kv_write(BUCKETS_BUCKET), *kv_read(LEASES_BUCKET), *kv_write(LEASES_BUCKET), *obj_read(WORKREQ_BUCKET),
               IMPORT_REPLIES],
              [MICRO]),
        _role("jobrunner", WF_ACCOUNT,
              [subjects.any_workflow("job.>"), *js_read(EVENTS_STREAM), *js_follow(EVENTS_STREAM),
               *js_pull(JOBS_STREAM, RUNNER_CONSUMER), *kv_read(ES_BUCKET), *kv_read(BUCKETS_BUCKET),
               *kv_write(BUCKETS_BUCKET), *obj_read(WORKREQ_BUCKET), *kv_read(OUTPUT_BUCKET),
               *kv_write(OUTPUT_BUCKET), IMPORT_REPLIES],
              [MICRO]),
        _role("status", WF_ACCOUNT,
              [*js_read(EVENTS_STREAM), *js_follow(EVENTS_STREAM), *js_pull(EVENTS_STREAM, STATUS_CONSUMER),
               *kv_read(STATUS_BUCKET), *kv_write(STATUS_BUCKET), *obj_read(WORKREQ_BUCKET), *kv_read(OUTPUT_BUCKET),
               IMPORT_REPLIES],
              [subjects.api("status"), subjects.api("logs"), MICRO]),
        # Keeps the views in PEOPLE in place (used by `wf up` and `wf setup`, never by a person).
        _role("views", PEOPLE_ACCOUNT,
              [js_api("INFO"), *(js_api("STREAM", verb, stream) for stream in VIEW_STREAMS
                                 for verb in ("CREATE", "UPDATE", "INFO"))],
              [], deny=[]),
        _role("client", PEOPLE_ACCOUNT, PERSON_PUBLISH, [subjects.ALL_EVENTS], deny=PERSON_DENY),
        _role("operator", PEOPLE_ACCOUNT, OPERATOR_PUBLISH, [subjects.ALL_EVENTS], deny=PERSON_DENY),
    ]
}


def _exports() -> list[dict[str, object]]:
    """What WF offers PEOPLE (and nobody else)."""
    people = [PEOPLE_ACCOUNT]
    exports: list[dict[str, object]] = [
        {"service": subjects.ALL_API, "accounts": people},
        {"service": MICRO, "response_type": "stream", "accounts": people},
        {"stream": f"{VIEW_EVENTS_PREFIX}.>", "accounts": people},
        {"stream": f"{VIEW_DELIVER_PREFIX}.>", "accounts": people},
        {"service": FLOW_CONTROL, "accounts": people},
        {"service": f"{ES_GATE_PREFIX}.>", "accounts": people},
        {"service": f"{ES_GATE_MIRROR_PREFIX}.>", "accounts": people},
    ]
    for bucket in VIEW_MIRRORS:
        stream = f"KV_{bucket}"
        for subject in (js_api("CONSUMER", "CREATE", stream), js_api("CONSUMER", "CREATE", stream, ">"),
                        js_api("CONSUMER", "DELETE", stream, ">"), js_api("CONSUMER", "INFO", stream, ">")):
            exports.append({"service": subject, "accounts": people})
    return exports


def _imports() -> list[dict[str, object]]:
    """What PEOPLE takes from WF; the API with the caller's identity shared (`Nats-Request-Info`)."""
    def service(subject: str, to: str | None = None, share: bool = False) -> dict[str, object]:
        entry: dict[str, object] = {"service": {"account": WF_ACCOUNT, "subject": subject}}
        if to is not None:
            entry["to"] = to
        if share:
            entry["share"] = True
        return entry

    imports: list[dict[str, object]] = [
        service(subjects.ALL_API, share=True),
        service(MICRO),
        {"stream": {"account": WF_ACCOUNT, "subject": f"{VIEW_EVENTS_PREFIX}.>"}, "to": subjects.ALL_EVENTS},
        {"stream": {"account": WF_ACCOUNT, "subject": f"{VIEW_DELIVER_PREFIX}.>"}},
        service(FLOW_CONTROL),
        # an emergency stop from nats-py (`$KV.wf_es.<name>`) or from the nats CLI, which writes to a
        # mirrored bucket through the mirror's API prefix; both reach wf-intake's gate, with who did it
        service(f"{ES_GATE_PREFIX}.>", to=subjects.kv_all(ES_BUCKET), share=True),
        service(f"{ES_GATE_MIRROR_PREFIX}.>", to=f"{VIEW_JS_API}.{subjects.kv_all(ES_BUCKET)}", share=True),
    ]
    for exported in _exports():
        subject = str(exported.get("service", ""))
        if subject.startswith(js_api("CONSUMER", "")):
            imports.append(service(subject, to=VIEW_JS_API + subject.removeprefix(subjects.JS_API)))
    return imports


def new_credentials() -> dict[str, str]:
    """A random password per role (never in the repo, never logged)."""
    return {name: secrets.token_urlsafe(24) for name in ROLES}


# The passwords are random (24 or 32 bytes): bcrypt's work factor protects guessable secrets and adds
# nothing here, so the cheapest cost keeps each connection's check about a millisecond.
BCRYPT_COST = 4


def hash_password(password: str) -> str:
    """How nats-server stores a password it checks but never needs to know (`$2b$...`)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()


def user_entry(name: str, password_hash: str, role: Role) -> dict[str, object]:
    """One user as nats-server's configuration lists it: a bcrypt hash and the role's permissions."""
    publish: dict[str, object] = {"allow": list(role.publish)}
    if role.deny_publish:
        publish["deny"] = list(role.deny_publish)
    permissions: dict[str, object] = {"publish": publish, "subscribe": {"allow": list(role.subscribe)}}
    return {"user": name, "password": password_hash, "permissions": permissions}


def system_users(credentials: dict[str, str]) -> dict[str, list[dict[str, object]]]:
    """Each account's users for the roles in `credentials` (user name = role name), hashed."""
    users: dict[str, list[dict[str, object]]] = {WF_ACCOUNT: [], PEOPLE_ACCOUNT: []}
    for name, password in credentials.items():
        role = ROLES[name]
        users[role.account].append(user_entry(name, hash_password(password), role))
    return users


def people_store_bytes() -> int:
    """The most the PEOPLE account's views may store on disk (settings.people_store_bytes): what a
    person abusing a push consumer can fill at worst; WF's own store is not part of it."""
    return settings.people_store_bytes()


def accounts_block(users: dict[str, list[dict[str, object]]] | None = None,
                   includes: dict[str, Path] | None = None) -> str:
    """The `accounts { WF {...}, PEOPLE {...} }` block of a nats-server configuration (JSON is valid
    nats-server configuration syntax). Each account's users are listed (`users`) or, for `wf up`,
    included from a file that `wf user` rewrites while the server runs (`includes`)."""
    accounts: dict[str, dict[str, object]] = {
        WF_ACCOUNT: {"jetstream": "enabled", "exports": _exports()},
        PEOPLE_ACCOUNT: {
            "jetstream": {"max_streams": len(VIEW_STREAMS), "max_consumers": VIEW_MAX_CONSUMERS,
                          "max_file": people_store_bytes()},
            "imports": _imports(),
        },
    }
    parts = []
    for account, body in accounts.items():
        if includes is not None:
            text = json.dumps(body, indent=1)
            text = text[: text.rindex("}")] + f" include {json.dumps(str(includes[account]))}\n}}"
        else:
            text = json.dumps({**body, "users": (users or {}).get(account, [])}, indent=1)
        parts.append(f" {json.dumps(account)}: {text}")
    return "accounts: {\n" + ",\n".join(parts) + "\n}\n"


def role_url(host_port: str, role: str, credentials: dict[str, str]) -> str:
    return f"nats://{role}:{credentials[role]}@{host_port}"
