"""`wf ls`: find workflows in the projection (KV `wf_status`), newest first, with filters.

Two reads, chosen by the filters (docs/performance.md, "wf ls with 100,000 workflows"):
- only `--since`/`--limit`: the keys (one ordered consumer, last per subject, headers only), then a
  direct get of the `--limit` newest ids in the range (ids are time-ordered ULIDs);
- any filter on the content: the values (one ordered consumer over `$KV.wf_status.>`, last per
  subject; with `--since`, from that time on: every workflow submitted since was written since),
  each decoded into the few fields the filters look at, only the newest `--limit` matches kept.

Both work with a person's credential (the view `KV_wf_status` in PEOPLE: ordered consumers and direct
gets). The filters themselves (`Filters.match`) are pure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
import heapq
import re
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from schemas import subjects
from services.common.ids import encode
from services.common.topology import STATUS_BUCKET

STREAM = f"KV_{STATUS_BUCKET}"
SUBJECT_PREFIX = subjects.kv_prefix(STATUS_BUCKET)
CONSUMER_GONE_S = 5.0  # how long the server keeps a scan's ordered consumer once the scan ends
FIRST_READ_TIMEOUT_S = 10.0  # no message for this long while some are pending: give up (the server is gone)

# ---------------------------------------------------------------- the pure part


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """`90s`, `15m`, `2h`, `1h30m`, `3d`, `1w` (or plain seconds) as seconds; ValueError otherwise."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if not text or not re.fullmatch(r"(?:\d+(?:\.\d+)?[smhdw])+", text):
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h, 1h30m, 3d, 1w)")
    return sum(float(n) * _UNIT_S[unit] for n, unit in _DURATION_RE.findall(text))


def parse_since(text: str, now_s: float) -> float:
    """`--since`: a duration back from now (`2h`), or an ISO 8601 time (UTC unless it says otherwise),
    as unix seconds."""
    try:
        return now_s - parse_duration(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since wants a duration (2h, 30m, 3d) or an ISO time (2026-11-29T14:00:00Z); "
                         f"got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def id_floor(since_s: float) -> str:
    """The smallest workflow id made at or after `since_s`: ids (ULIDs) sort by creation time, so
    `wf_id >= id_floor(t)` is "submitted at or after t"."""
    return encode(max(0, int(since_s * 1000)) << 80)


class _Job(msgspec.Struct):
    status: str = ""
    error: str = ""
    retrying: bool = False


class _Block(msgspec.Struct):
    jobs: list[_Job] = []


class _Approval(msgspec.Struct):
    by: str = ""


class Row(msgspec.Struct):
    """The fields of a StatusResp the filters read (absent ones as their defaults: older values and
    fields other features add later read the same)."""

    id: str = ""
    name: str = ""
    verdict: str = ""
    status: str = ""
    submitted_by: str = ""
    executed_by: str = ""
    cancelled_by: str = ""
    paused_by: str = ""
    approvals: list[_Approval] = []
    approvals_needed: int = 0
    blocks: list[_Block] = []


row_decoder = msgspec.json.Decoder(Row)

# How the fold (services/status/fold.py) records a job whose attempt failed and is retried: it stays
# `running` with this error until an attempt completes or the last one fails.
_RETRY_ERROR_RE = re.compile(r"attempt \d+ failed, retrying: ")


def job_retrying(job: _Job) -> bool:
    return job.retrying or (job.status == "running" and _RETRY_ERROR_RE.match(job.error) is not None)


VERDICT_ONLY = ("pending", "approved", "rejected")


def _has_status(row: Row, wanted: str) -> bool:
    """`--status`: the status; or the verdict (pending, approved, rejected); or `cancelled` (someone
    cancelled it: it ends `failed`, `cancelled_by` saying who)."""
    if wanted == "cancelled":
        return bool(row.cancelled_by)
    if wanted in VERDICT_ONLY:
        return row.verdict == wanted
    return row.status == wanted


@dataclass(frozen=True)
class Filters:
    """`wf ls`'s filters, all of them together (AND). None/False: that filter is off."""

    names: tuple[str, ...] = ()  # exact names or globs (`Erase*`)
    statuses: tuple[str, ...] = ()  # status, or verdict for pending/approved/rejected
    by: str | None = None
    since_s: float | None = None
    paused: bool = False
    retrying: bool = False
    stuck_s: float | None = None
    awaiting_approval: bool = False

    @property
    def on_content(self) -> bool:
        """Whether any filter needs the values (not only the keys)."""
        return bool(self.names or self.statuses or self.by is not None or self.paused or self.retrying
                    or self.stuck_s is not None or self.awaiting_approval)

    @property
    def floor(self) -> str:
        return id_floor(self.since_s) if self.since_s is not None else ""

    def match_id(self, wf_id: str) -> bool:
        return wf_id >= self.floor

    def match(self, row: Row, updated_s: float | None = None, now_s: float | None = None) -> bool:
        """Whether one StatusResp passes every filter; `updated_s`: when its KV entry was last
        written (the projection rewrites it on every change), for `--stuck`."""
        if not self.match_id(row.id):
            return False
        if self.names and not any(row.name == n or fnmatch.fnmatchcase(row.name, n) for n in self.names):
            return False
        if self.statuses and not any(_has_status(row, s) for s in self.statuses):
            return False
        if self.by is not None and self.by not in (
                row.submitted_by, row.executed_by, row.cancelled_by, row.paused_by,
                *(a.by for a in row.approvals)):
            return False
        if self.paused and row.status != "paused":
            return False
        if self.retrying and not (row.status == "running"
                                  and any(job_retrying(j) for b in row.blocks for j in b.jobs)):
            return False
        if self.stuck_s is not None:
            if row.status != "running" or updated_s is None:
                return False
            if (time.time() if now_s is None else now_s) - updated_s < self.stuck_s:
                return False
        if self.awaiting_approval and not (
                row.verdict == "approved" and row.status == "not_started" and not row.executed_by
                and len({a.by for a in row.approvals if a.by != row.submitted_by}) < row.approvals_needed):
            return False
        return True


class Newest:
    """The `limit` largest ids seen (newest workflows), with their values: O(limit) memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.heap: list[tuple[str, bytes]] = []

    def offer(self, wf_id: str, value: bytes) -> None:
        if self.limit <= 0:
            return
        if len(self.heap) < self.limit:
            heapq.heappush(self.heap, (wf_id, value))
        elif wf_id > self.heap[0][0]:
            heapq.heapreplace(self.heap, (wf_id, value))

    def result(self) -> list[tuple[str, bytes]]:
        return sorted(self.heap, reverse=True)


# ---------------------------------------------------------------- reading the bucket


def _ack_fields(reply: str) -> tuple[float, int]:
    """(timestamp in unix seconds, messages pending) from an ordered consumer's delivery reply subject
    `$JS.ACK[.<domain>.<hash>].<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts ns>.<pending>[.<token>]`."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[7]) / 1e9, int(tokens[8])
    return int(tokens[9]) / 1e9, int(tokens[10])


async def scan(js: JetStreamContext, on_msg, *, headers_only: bool, since_s: float | None = None,
               ) -> int:
    """Every key's last value once (`on_msg(key, data, written_s)`), through one ordered consumer over
    `$KV.wf_status.>`: last per subject, or (`since_s`) what was written from then on (the bucket
    keeps one value per key, so that too is each key's last). Deleted keys are skipped. Returns the
    number of messages read."""
    done = asyncio.get_running_loop().create_future()
    count = 0

    async def deliver(msg: Msg) -> None:
        nonlocal count
        count += 1
        written_s, pending = _ack_fields(msg.reply)
        headers = msg.headers
        if not headers or headers.get("KV-Operation") is None:
            on_msg(msg.subject[len(SUBJECT_PREFIX):], msg.data, written_s)
        if pending == 0 and not done.done():
            done.set_result(None)

    # gone CONSUMER_GONE_S after the scan: the view holds at most VIEW_MAX_CONSUMERS for every person,
    # and one left to the view's default (VIEW_CONSUMER_INACTIVE_S) per `wf ls` would add up
    config: dict[str, Any] = {"headers_only": headers_only, "inactive_threshold": CONSUMER_GONE_S}
    if since_s is None:
        config["deliver_policy"] = api.DeliverPolicy.LAST_PER_SUBJECT
    else:
        config["deliver_policy"] = api.DeliverPolicy.BY_START_TIME
        config["opt_start_time"] = dt.datetime.fromtimestamp(since_s, dt.UTC).isoformat().replace(
            "+00:00", "Z")
    sub = await js.subscribe(subjects.kv_all(STATUS_BUCKET), stream=STREAM, cb=deliver, ordered_consumer=True,
                             config=api.ConsumerConfig(**config))
    try:
        info = await sub.consumer_info()
        # nothing to read: none pending and none delivered yet (those delivered end the scan themselves:
        # the last one says 0 pending, maybe before their callbacks have run)
        if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
            return count
        last = -1
        while not done.done():  # no deadline while messages keep coming; FIRST_READ_TIMEOUT_S of silence ends it
            if count == last:
                raise nats.errors.TimeoutError
            last = count
            try:
                await asyncio.wait_for(asyncio.shield(done), FIRST_READ_TIMEOUT_S)
            except TimeoutError:
                pass
        return count
    finally:
        await sub.unsubscribe()


async def find(js: JetStreamContext, filters: Filters, limit: int, now_s: float | None = None
               ) -> tuple[list[bytes], dict[str, Any]]:
    """The newest `limit` StatusResp values (JSON, newest first) that pass the filters, and how the
    read went (`read`: messages read, `method`)."""
    newest = Newest(limit)
    now_s = time.time() if now_s is None else now_s
    floor = filters.floor
    if not filters.on_content:
        ids: list[str] = []
        read = await scan(js, lambda key, _data, _ts: ids.append(key) if key >= floor else None,
                          headers_only=True, since_s=filters.since_s)
        wanted = sorted(ids, reverse=True)[:limit]
        values = await asyncio.gather(*(_get(js, wf_id) for wf_id in wanted))
        return [v for v in values if v], {"read": read, "method": "keys+get"}

    def on_msg(key: str, data: bytes, written_s: float) -> None:
        if key < floor or not data:
            return
        if newest.heap and len(newest.heap) >= limit and key <= newest.heap[0][0]:
            return  # older than every match kept: cannot make the list
        try:
            row = row_decoder.decode(data)
        except msgspec.DecodeError:
            return
        if filters.match(row, written_s, now_s):
            newest.offer(key, data)

    read = await scan(js, on_msg, headers_only=False, since_s=filters.since_s)
    return [value for _, value in newest.result()], {"read": read, "method": "values"}


async def _get(js: JetStreamContext, wf_id: str) -> bytes | None:
    try:
        msg = await js.get_last_msg(STREAM, subjects.kv(STATUS_BUCKET, wf_id), direct=True)
    except (nats.js.errors.NotFoundError, nats.js.errors.KeyNotFoundError):
        return None
    if msg.headers and msg.headers.get("KV-Operation"):
        return None
    return msg.data
