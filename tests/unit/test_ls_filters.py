"""`wf ls`'s filters (wf/ls.py): pure, no server."""

from __future__ import annotations

import argparse
import json
import os

import msgspec
import pytest

from schemas import JobFailed, JobStarted, StatusResp, Submitted, WorkReq, encoder
from services.common.ids import encode, id_time_s
from services.status import fold
from wf.commands.parser import build_parser
from wf.commands.workflows import ls_filters
from wf.ls import Filters, Newest, _ack_fields, id_floor, parse_duration, parse_since, row_decoder

NOW = 1_800_000_000.0


def make_id(ms: int) -> str:
    """A ULID of that millisecond (not `new_id`, whose process-wide last time this must not move)."""
    return encode((ms << 80) | int.from_bytes(os.urandom(10), "big"))


def new_id(now_ms: int = int(NOW * 1000)) -> str:
    return make_id(now_ms)


def status(**fields) -> dict:  # type: ignore[no-untyped-def,type-arg]
    base = {"id": new_id(int((NOW - 60) * 1000)), "name": "SleepDemo", "desc": "", "verdict": "approved",
            "status": "completed", "submitted_by": "alice", "executed_by": "alice", "cancelled_by": "",
            "blocks": [{"desc": "", "status": "completed", "has_error": False,
                        "jobs": [{"name": "sleep", "desc": "", "args": {}, "status": "completed", "error": ""}]}]}
    return {**base, **fields}


def matches(filters: Filters, value: dict, updated_s: float | None = NOW) -> bool:  # type: ignore[type-arg]
    return filters.match(row_decoder.decode(json.dumps(value)), updated_s, NOW)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("3d", 259200),
                                          ("1w", 604800), ("45", 45), ("0.5h", 1800), (" 2H ", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "2x", "-1h", "2 h", "1h-30m", "yesterday"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_since_is_a_duration_back_or_an_iso_time_utc_unless_it_says():
    assert parse_since("2h", NOW) == NOW - 7200
    assert parse_since("2027-01-15T08:00:00Z", NOW) == parse_since("2027-01-15T08:00:00", NOW)
    assert parse_since("2027-01-15T09:00:00+01:00", NOW) == parse_since("2027-01-15T08:00:00Z", NOW)
    assert parse_since("1970-01-01T00:01:00Z", NOW) == 60
    with pytest.raises(ValueError, match="--since"):
        parse_since("last tuesday", NOW)


def test_the_id_floor_orders_ids_by_creation_time():
    t = NOW - 3600
    before, at, after = new_id(int(t * 1000) - 1), new_id(int(t * 1000)), new_id(int(t * 1000) + 1)
    floor = id_floor(t)
    assert before < floor <= at < after
    assert id_time_s(floor) == t
    f = Filters(since_s=t)
    assert not f.on_content  # --since alone reads the keys only
    assert not matches(f, status(id=before)) and matches(f, status(id=at)) and matches(f, status(id=after))


def test_name_exact_glob_or_any_of_several():
    value = status(name="EraseSatellite")
    assert matches(Filters(names=("EraseSatellite",)), value)
    assert matches(Filters(names=("Erase*",)), value)
    assert matches(Filters(names=("SleepDemo", "EraseSatellite")), value)
    assert not matches(Filters(names=("Erase",)), value)
    assert not matches(Filters(names=("erasesatellite",)), value)  # case matters, as in policies.json


def test_status_or_the_verdict_for_pending_approved_rejected():
    assert matches(Filters(statuses=("completed",)), status())
    assert not matches(Filters(statuses=("failed",)), status())
    assert matches(Filters(statuses=("failed", "completed")), status())
    rejected = status(verdict="rejected", status="not_started")
    assert matches(Filters(statuses=("rejected",)), rejected)
    assert matches(Filters(statuses=("not_started",)), rejected)
    assert not matches(Filters(statuses=("approved",)), rejected)
    assert matches(Filters(statuses=("approved",)), status())
    assert matches(Filters(statuses=("paused",)), status(status="paused"))
    cancelled = status(status="failed", cancelled_by="bob")
    assert matches(Filters(statuses=("cancelled",)), cancelled) and matches(Filters(statuses=("failed",)), cancelled)
    assert not matches(Filters(statuses=("cancelled",)), status(status="failed"))


def test_by_is_anyone_who_acted_on_it():
    value = status(submitted_by="alice", executed_by="bob", cancelled_by="carol")
    for person in ("alice", "bob", "carol"):
        assert matches(Filters(by=person), value)
    assert not matches(Filters(by="dave"), value)
    assert matches(Filters(by="erin"), status(paused_by="erin"))
    assert matches(Filters(by="fay"), status(approvals=[{"by": "fay", "at": "t", "comment": ""}]))


def test_paused():
    assert matches(Filters(paused=True), status(status="paused", paused_by="bob"))
    assert not matches(Filters(paused=True), status(status="running"))


def test_retrying_is_derived_from_what_the_fold_records():
    wf_id = new_id()
    req = msgspec.convert({"name": "SleepDemo", "blocks": [{"jobs": [
        {"name": "sleep", "args": {"seconds": "1"}}, {"name": "sleep", "args": {"seconds": "2"}}]}]}, WorkReq)
    folded = fold.new_status(Submitted(id=wf_id, at=NOW, by="alice", req=req))
    folded.status = "running"
    fold.apply(folded, JobStarted(id=wf_id, at=NOW, block=0, job=1))
    value = json.loads(encoder.encode(folded))
    assert not matches(Filters(retrying=True), value)
    fold.apply(folded, JobFailed(id=wf_id, at=NOW, block=0, job=1, attempt=1, error="busy", retrying=True))
    assert matches(Filters(retrying=True), json.loads(encoder.encode(folded)))
    fold.apply(folded, JobStarted(id=wf_id, at=NOW, block=0, job=1, attempt=2))
    assert matches(Filters(retrying=True), json.loads(encoder.encode(folded)))  # still: attempt 2 runs
    fold.apply(folded, JobFailed(id=wf_id, at=NOW, block=0, job=1, attempt=2, error="busy"))  # the last
    assert not matches(Filters(retrying=True), json.loads(encoder.encode(folded)))
    # an explicit flag, should a job entry ever carry one
    flagged = status(status="running")
    flagged["blocks"][0]["jobs"][0].update(status="running", retrying=True)
    assert matches(Filters(retrying=True), flagged)


def test_stuck_is_running_with_no_write_for_that_long():
    running = status(status="running")
    f = Filters(stuck_s=600)
    assert matches(f, running, updated_s=NOW - 601)
    assert not matches(f, running, updated_s=NOW - 599)
    assert not matches(f, status(), updated_s=NOW - 10_000)  # completed is not stuck
    assert not matches(f, running, updated_s=None)


def test_awaiting_approval_reads_absent_fields_as_none_needed():
    waiting = status(status="not_started", executed_by="", approvals=[{"by": "bob", "at": "", "comment": ""}],
                     approvals_needed=2)
    f = Filters(awaiting_approval=True)
    assert matches(f, waiting)
    assert not matches(f, {**waiting, "approvals_needed": 1})
    assert not matches(f, status(status="not_started", executed_by=""))  # no such policy: nothing awaited
    assert not matches(f, {**waiting, "status": "running", "executed_by": "alice"})
    assert not matches(f, {**waiting, "verdict": "rejected"})
    two = [{"by": "bob", "at": "", "comment": ""}, {"by": "carol", "at": "", "comment": ""}]
    assert not matches(f, {**waiting, "approvals": two})
    assert matches(f, {**waiting, "approvals": [*two[:1], {"by": "alice", "at": "", "comment": ""}]})  # the submitter's


def test_filters_combine_and_old_values_still_decode():
    f = Filters(names=("SleepDemo",), statuses=("running",), by="bob")
    assert matches(f, status(status="running", executed_by="bob"))
    assert not matches(f, status(status="running"))
    old = {"id": new_id(), "name": "SleepDemo", "desc": "", "verdict": "approved", "status": "running",
           "had_errors": False, "was_es_stopped": False, "blocks": []}  # before people were recorded
    assert matches(Filters(statuses=("running",)), old) and not matches(Filters(by="bob"), old)
    summary = {**status(status="running"), "jobs_omitted": True,
               "blocks": [{"desc": "", "status": "running", "has_error": False, "jobs": [],
                           "job_counts": {"running": 3}}]}
    assert matches(Filters(statuses=("running",)), summary)
    assert row_decoder.decode(encoder.encode(StatusResp(id="x", name="n", desc=""))).status == "not_started"


def test_newest_keeps_the_largest_ids_only():
    newest = Newest(3)
    for wf_id in ["05", "01", "09", "03", "07", "02"]:
        newest.offer(wf_id, wf_id.encode())
    assert [k for k, _ in newest.result()] == ["09", "07", "05"]
    none = Newest(0)
    none.offer("1", b"")
    assert none.result() == []


def test_the_delivery_reply_gives_time_and_pending():
    assert _ack_fields("$JS.ACK.KV_wf_status.c1.1.42.42.1700000000123456789.7") == (1700000000.123456789, 7)
    assert _ack_fields("$JS.ACK.dom.hash.KV_wf_status.c1.1.42.42.1700000000000000000.0.tok") == (1700000000.0, 0)


def test_flags_become_filters():
    def parse(*argv: str) -> Filters:
        args: argparse.Namespace = build_parser().parse_args(["ls", *argv])
        return ls_filters(args, NOW)

    f = parse("--name", "A,B", "--name", "C", "--status", "running", "--by", "bob", "--since", "2h", "--paused",
              "--retrying", "--stuck", "30m", "--awaiting-approval")
    assert f == Filters(names=("A", "B", "C"), statuses=("running",), by="bob", since_s=NOW - 7200, paused=True,
                        retrying=True, stuck_s=1800, awaiting_approval=True)
    assert parse() == Filters() and not parse().on_content
    with pytest.raises(ValueError, match="--stuck"):
        parse("--stuck", "soon")
    with pytest.raises(ValueError, match="--since"):
        parse("--since", "soon")
