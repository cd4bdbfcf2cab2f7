"""Every NATS subject the system publishes, subscribes or requests on, built in one place.

The contract (docs/clients.md, ../shared/contract.md) fixes the public ones: events
`wf.evt.<id>.<event>`, job commands `wf.cmd.job.<id>.<block>.<job>`, the API `wf.api.<endpoint>`.
The rest are NATS's own (`$KV`, `$SRV`, `$JS`) or the account plumbing of wf/auth.py. Code elsewhere
never spells a subject by hand: it calls these, so a rename is one edit and a grep finds every user.
"""

from __future__ import annotations

# ---------------------------------------------------------------- events (stream WF_EVENTS)

EVENTS_ROOT = "wf.evt"
ALL_EVENTS = f"{EVENTS_ROOT}.>"


def event(wf_id: str, kind: str) -> str:
    """One workflow's event subject: `kind` is what follows the id, e.g. `submitted`,
    `workflow.completed`, `approval.alice`, `job.0.1.started`."""
    return f"{EVENTS_ROOT}.{wf_id}.{kind}"


def workflow_events(wf_id: str) -> str:
    """Every event of one workflow."""
    return f"{EVENTS_ROOT}.{wf_id}.>"


def workflow_id(event_subject: str) -> str:
    """The workflow id of an event's subject (`wf.evt.<id>.<event>`)."""
    return event_subject.split(".", 3)[2]


def any_workflow(kind: str) -> str:
    """One kind of event, of every workflow: `any_workflow("submitted")` is `wf.evt.*.submitted`."""
    return f"{EVENTS_ROOT}.*.{kind}"


def workflow_state(wf_id: str, state: str) -> str:
    """`started`, `completed`, `failed` or `cancelled` of the workflow as a whole."""
    return event(wf_id, f"workflow.{state}")


def block_state(wf_id: str, block: int, state: str) -> str:
    return event(wf_id, f"block.{block}.{state}")


def job_event(wf_id: str, block: int, job: int, state: str) -> str:
    """`started`, `completed` or `failed` of one job; `state` may be `*`."""
    return event(wf_id, f"job.{block}.{job}.{state}")


def approval(wf_id: str, person: str) -> str:
    return event(wf_id, f"approval.{person}")


# ---------------------------------------------------------------- commands (stream WF_JOBS)

COMMANDS_ROOT = "wf.cmd"
ALL_COMMANDS = f"{COMMANDS_ROOT}.>"
ALL_JOB_COMMANDS = f"{COMMANDS_ROOT}.job.>"


def job_command(wf_id: str, block: int, job: int) -> str:
    return f"{COMMANDS_ROOT}.job.{wf_id}.{block}.{job}"


def job_commands(wf_id: str) -> str:
    """Every job command of one workflow."""
    return f"{COMMANDS_ROOT}.job.{wf_id}.>"


# ---------------------------------------------------------------- the request/reply API (micro)

API_ROOT = "wf.api"
ALL_API = f"{API_ROOT}.>"


def api(endpoint: str) -> str:
    """`wf.api.<endpoint>`: submit, upload, exec, status, cancel, approve, deny, pause, resume, logs."""
    return f"{API_ROOT}.{endpoint}"


# ---------------------------------------------------------------- NATS's own: KV, micro, JetStream


def kv(bucket: str, key: str) -> str:
    """The subject a KV bucket's key is written on (a JetStream publish)."""
    return f"$KV.{bucket}.{key}"


def kv_all(bucket: str) -> str:
    return f"$KV.{bucket}.>"


def kv_prefix(bucket: str) -> str:
    """`$KV.<bucket>.`: what precedes the key in a KV message's subject."""
    return f"$KV.{bucket}."


MICRO_ALL = "$SRV.>"


def micro_ping(service: str | None = None) -> str:
    """`$SRV.PING` (every micro service answers), or one service's by name."""
    return "$SRV.PING" if service is None else f"$SRV.PING.{service}"


def micro_stats(service: str) -> str:
    return f"$SRV.STATS.{service}"


JS_ROOT = "$JS"  # every JetStream subject: its API, acks, flow control
JS_API = "$JS.API"
JS_ACK_ROOT = "$JS.ACK"
JS_FLOW_CONTROL = "$JS.FC.>"  # replies to a push (ordered) consumer's flow control

# ---------------------------------------------------------------- account plumbing (wf/auth.py)

# The people's read-only views: WF_EVENTS republishes every stored event under VIEW_EVENTS_PREFIX,
# which PEOPLE imports back onto `wf.evt.>`; mirrors' consumers deliver under VIEW_DELIVER_PREFIX and
# are created through WF's JetStream API as PEOPLE imports it (VIEW_JS_API). See topology.py.
VIEW_EVENTS_PREFIX = "wf.view.evt"
VIEW_DELIVER_PREFIX = "wf.view.mirror"
VIEW_JS_API = "$JS.wf.API"
# A person's emergency-stop write (`$KV.wf_es.<name>`) reaches WF as `wf.gate.es.<name>` (or, from
# the nats CLI writing the mirrored bucket, `wf.gate.es_mirror.<name>`): services/safety/gate.py.
ES_GATE_PREFIX = "wf.gate.es"
ES_GATE_MIRROR_PREFIX = "wf.gate.es_mirror"


# ---------------------------------------------------------------- JetStream's API, object stores, inboxes


def js_api(*tokens: str) -> str:
    """`$JS.API.<tokens>`: `js_api("CONSUMER", "CREATE", stream)` is `$JS.API.CONSUMER.CREATE.<stream>`."""
    return ".".join((JS_API, *tokens))


def js_ack(*tokens: str) -> str:
    """`$JS.ACK.<tokens>`: the subjects a consumer's messages are acknowledged on."""
    return ".".join((JS_ACK_ROOT, *tokens))


def obj_all(bucket: str) -> str:
    """Every subject of an object store bucket (its chunks and its meta): `$O.<bucket>.>`."""
    return f"$O.{bucket}.>"


INBOX_ALL = "_INBOX.>"  # nats-py's reply inboxes (a service's own are SERVICE_INBOXES in topology.py)
IMPORT_REPLIES_ALL = "_R_.>"  # replies to requests that came through an account import (people's)


def micro_ping_instance(service: str, instance_id: str) -> str:
    """`$SRV.PING.<service>.<id>`: one instance of a micro service (`wf ping --id-file`)."""
    return f"{micro_ping(service)}.{instance_id}"
