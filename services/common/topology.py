"""Streams, consumers and KV buckets: created idempotently by `wf up` (or `wf setup`).

WF_EVENTS is the source of truth; WF_JOBS is the work queue of job commands; every KV bucket holds
state derived from WF_EVENTS (see docs/architecture.md)."""

from __future__ import annotations

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    ExternalStream,
    ObjectStoreConfig,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamConsumerLimits,
    StreamSource,
)

from schemas import subjects

EVENTS_STREAM = "WF_EVENTS"
JOBS_STREAM = "WF_JOBS"
STATUS_BUCKET = "wf_status"
ES_BUCKET = "wf_es"
BUCKETS_BUCKET = "wf_buckets"
CONFIG_BUCKET = "wf_config"
LEASES_BUCKET = "wf_leases"  # workflow id -> the executor that owns it (services/executor/lease.py)
IDEMPOTENCY_BUCKET = "wf_idempotency"  # hash of a submit's Nats-Msg-Id -> the workflow it created
IDEMPOTENCY_TTL_S = 24 * 3600.0
# WorkReqs too large for one message (services/workreqs.py): the whole WorkReq, by workflow
# id, in an object store; and the parts of uploads in progress (`wf.api.upload`), kept an hour.
WORKREQ_BUCKET = "wf_workreqs"
UPLOADS_BUCKET = "wf_uploads"
UPLOAD_TTL_S = 3600.0
UPLOADS_MAX_BYTES = 1024**3  # all uploads in progress together; past it, a new part gets 503
# person name -> role (client, operator, admin): written by `wf up` (from the registry, wf/users.py)
# and `wf user add/rm`, read by wf-intake to rank approvers (services/policy/approvals.py)
PEOPLE_BUCKET = "wf_people"
# what jobs printed or received (exec, ssh, http): "<id>.<block>.<job>" -> the last 256 KiB of the
# latest attempt, secrets redacted (services/jobs/output.py); written by runners, read by wf-status
# for `wf.api.logs` (`wf logs ID BLOCK JOB`); kept a week, at most OUTPUT_MAX_BYTES in all (past it, the
# oldest go first: ensure_output_bucket; a job's last 4 KiB stay in its terminal event and StatusResp)
OUTPUT_BUCKET = "wf_output"
OUTPUT_TTL_S = 7 * 24 * 3600.0
OUTPUT_MAX_BYTES = 1024**3
OUTPUT_MAX_VALUE = 300 * 1024

POLICY_CONSUMER = "policy"
EXECUTOR_CONSUMER = "executor"
STATUS_CONSUMER = "status"
RUNNER_CONSUMER = "jobrunner"

DUPLICATE_WINDOW_S = 120.0
# The executor holds a workflow's exec_requested message un-acked while it runs the workflow,
# renewing it with in-progress acks: if the executor dies, the message is redelivered after this
# long and another executor (or its restart) resumes the workflow from WF_EVENTS.
EXECUTOR_ACK_WAIT_S = 6.0
# A runner that dies mid-job leaves its command to be redelivered (and run again) after this long.
RUNNER_ACK_WAIT_S = 10.0
STATUS_ACK_WAIT_S = 30.0  # events a dead wf-status held come again after this

# The five services, by role, in the order `wf up` starts them (status before the executor, so the
# projection follows from the first event). A service's NATS name, its process name and its
# `$SRV.PING` name are `wf-<role>`; wf/auth.py gives each role its own user.
SERVICE_ROLES = ("intake", "policy", "status", "executor", "jobrunner")
SERVICE_NAMES = tuple(f"wf-{role}" for role in SERVICE_ROLES)

# The people's read-only views (wf/auth.py, docs/security.md): streams in the PEOPLE account that the
# server keeps in step with WF's. WF_EVENTS republishes every event once it is stored under
# VIEW_EVENTS_PREFIX, which PEOPLE imports back onto `wf.evt.>` (its own WF_EVENTS stores them, and
# `nats sub 'wf.evt.>'` sees them live); KV_wf_status and KV_wf_es are mirrors, whose consumers in WF
# are created through WF's JetStream API as PEOPLE imports it (VIEW_JS_API) and deliver under
# VIEW_DELIVER_PREFIX.
# Each service's own inbox prefix: what it alone may subscribe to (wf/auth.py), so no service sees
# another's replies and deliveries, nor can publish into them (bus.connect uses it by name).
SERVICE_INBOXES = {f"wf-{role}": f"_INBOX_{role}" for role in SERVICE_ROLES}
# A person's emergency-stop write (`$KV.wf_es.<name>`, from nats-py, `wf es` or the nats CLI) reaches
# WF as `wf.gate.es.<name>` (schemas/subjects.py): wf-intake records who, when and why on it, then writes the bucket
# (services/safety/gate.py). People never write WF's bucket themselves.
# the same gate for the nats CLI, which writes a mirrored bucket through the mirror's API prefix: an
# export of its own, as nats-server shares the caller's identity with one import of an export only
VIEW_MIRRORS = (STATUS_BUCKET, ES_BUCKET)
VIEW_MAX_CONSUMERS = 1000  # consumers a view holds at most (people's ordered consumers, watches)
VIEW_CONSUMER_INACTIVE_S = 300.0  # the longest a person's consumer may stay unused; also its default
VIEW_DUPLICATE_WINDOW_S = 0.1  # the server's smallest
# A person can make the server itself publish (a push consumer's deliveries and redeliveries are not
# checked against its creator's permissions) onto a subject it subscribes to, `wf.evt.X` included,
# which the events view stores. Bounded: copies per subject (an event's subject holds one message per
# attempt, at most WF_MAX_DELIVERIES), and the whole PEOPLE account's store (wf/auth.py,
# WF_PEOPLE_STORE_BYTES): past it the views stop taking messages, WF's streams never notice
# (docs/security.md).
VIEW_MAX_PER_SUBJECT = 32


def stream_configs(replicas: int = 1) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=[subjects.ALL_EVENTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
            allow_direct=True,
            num_replicas=replicas,
            republish=RePublish(src=subjects.ALL_EVENTS, dest=f"{subjects.VIEW_EVENTS_PREFIX}.>"),
        ),
        StreamConfig(
            name=JOBS_STREAM,
            subjects=[subjects.ALL_COMMANDS],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
            allow_direct=True,
            num_replicas=replicas,
        ),
    ]


def consumer_configs() -> dict[str, list[ConsumerConfig]]:
    def durable(name: str, filter_subject: str, ack_wait_s: float, max_ack_pending: int) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=name,
            filter_subject=filter_subject,
            ack_wait=ack_wait_s,
            max_ack_pending=max_ack_pending,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
        )

    return {
        EVENTS_STREAM: [
            durable(POLICY_CONSUMER, subjects.any_workflow("submitted"), 30.0, 1000),
            durable(EXECUTOR_CONSUMER, subjects.any_workflow("exec_requested"), EXECUTOR_ACK_WAIT_S, 20000),
            durable(STATUS_CONSUMER, subjects.ALL_EVENTS, STATUS_ACK_WAIT_S, 20000),
        ],
        JOBS_STREAM: [
            durable(RUNNER_CONSUMER, subjects.ALL_JOB_COMMANDS, RUNNER_ACK_WAIT_S, 20000),
        ],
    }


async def ensure_topology(js: JetStreamContext, replicas: int = 1) -> None:
    """Create or update every stream, consumer and bucket; safe to run any number of times.
    `replicas`: copies of each stream and bucket in a NATS cluster (3 for a cluster of three)."""
    for config in stream_configs(replicas):
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await js.update_stream(config)
    for stream, consumers in consumer_configs().items():
        for consumer in consumers:
            await js.add_consumer(stream, consumer)
    for bucket in (STATUS_BUCKET, ES_BUCKET, BUCKETS_BUCKET, CONFIG_BUCKET, LEASES_BUCKET, PEOPLE_BUCKET):
        await js.create_key_value(bucket=bucket, history=1, direct=True, replicas=replicas)
    # keys expire a day after they were written: a retried submit maps to its workflow for 24 hours
    await js.create_key_value(bucket=IDEMPOTENCY_BUCKET, history=1, direct=True, replicas=replicas,
                              ttl=IDEMPOTENCY_TTL_S)
    await js.create_key_value(bucket=UPLOADS_BUCKET, history=1, direct=True, replicas=replicas, ttl=UPLOAD_TTL_S,
                              max_bytes=UPLOADS_MAX_BYTES)
    await js.create_object_store(WORKREQ_BUCKET, ObjectStoreConfig(replicas=replicas))
    await ensure_output_bucket(js, replicas)


async def ensure_output_bucket(js: JetStreamContext, replicas: int = 1) -> None:
    """KV `wf_output`, whose stream discards its OLDEST values when full (nats-py makes every bucket
    discard new writes): a flood of output then pushes out older jobs' whole output (their last
    4 KiB stay in their events and StatusResp) instead of keeping anyone's new output for a week."""
    try:
        await js.create_key_value(bucket=OUTPUT_BUCKET, history=1, direct=True, replicas=replicas,
                                  ttl=OUTPUT_TTL_S, max_bytes=OUTPUT_MAX_BYTES, max_value_size=OUTPUT_MAX_VALUE)
    except nats.js.errors.BadRequestError:  # it exists (with discard old: its config differs from nats-py's)
        pass
    config = (await js.stream_info(f"KV_{OUTPUT_BUCKET}")).config
    if config.discard != DiscardPolicy.OLD:
        config.discard = DiscardPolicy.OLD
        await js.update_stream(config)


def view_configs(replicas: int = 1) -> list[StreamConfig]:
    """The PEOPLE account's views (created with the `views` role's credential)."""
    # (no max_ack_pending default: the server would then refuse ordered consumers, which ack nothing)
    limits = StreamConsumerLimits(inactive_threshold=VIEW_CONSUMER_INACTIVE_S)
    common = dict(storage=StorageType.FILE, allow_direct=True, num_replicas=replicas, deny_delete=True,
                  deny_purge=True, max_consumers=VIEW_MAX_CONSUMERS, consumer_limits=limits)
    views = [
        # WF's stream republishes only what it stored, each once: nothing to deduplicate here, and a
        # window as long as WF's would hold every event's Nats-Msg-Id in the server's memory for nothing
        StreamConfig(name=EVENTS_STREAM, subjects=[subjects.ALL_EVENTS], retention=RetentionPolicy.LIMITS,
                     duplicate_window=VIEW_DUPLICATE_WINDOW_S, max_msgs_per_subject=VIEW_MAX_PER_SUBJECT,
                     **common),  # type: ignore[arg-type]
    ]
    for bucket in VIEW_MIRRORS:
        stream = f"KV_{bucket}"
        external = ExternalStream(api=subjects.VIEW_JS_API, deliver=f"{subjects.VIEW_DELIVER_PREFIX}.{bucket}")
        views.append(StreamConfig(name=stream, mirror=StreamSource(name=stream, external=external),
                                  max_msgs_per_subject=1, discard=DiscardPolicy.NEW,
                                  **common))  # type: ignore[arg-type]
    return views


async def ensure_views(js: JetStreamContext, replicas: int = 1) -> None:
    """Create or update the PEOPLE account's views; safe to run any number of times."""
    for config in view_configs(replicas):
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await js.update_stream(config)
