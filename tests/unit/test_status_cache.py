"""wf-status's pure parts beside the fold: when a StatusResp is written (services/status/pacing.py)
and the projections kept in memory (services/status/cache.py)."""

from __future__ import annotations

from schemas import Approved, Submitted, workreq_decoder
from services.status import cache as cache_module
from services.status.cache import ENDED_KEEP_S, Cache, Entry
from services.status.fold import new_status
from services.status.pacing import MAX_UNWRITTEN_EVENTS, MIN_WRITE_INTERVAL_S, WRITE_BYTES_PER_S, head, write_due

REQ = workreq_decoder.decode(b'{"name": "SleepDemo", "blocks": [{"jobs": [{"name": "sleep", "args": {"seconds": "1"}}]}]}')


def entry(wf_id: str = "W", *, unwritten: int = 0, status: str = "", last_write: float = 0.0, size: int = 0) -> Entry:
    e = Entry(new_status(Submitted(id=wf_id, at=0, req=REQ)), revision=1, last_write=last_write, size=size)
    e.events = [Approved(id=wf_id, at=0)] * unwritten
    if status:
        e.status.status = status
    return e


def test_nothing_unwritten_is_never_due() -> None:
    assert not write_due(unwritten=0, urgent=True, size=0, since_last_write_s=1e9)


def test_urgent_or_too_many_unwritten_is_due_at_once() -> None:
    assert write_due(unwritten=1, urgent=True, size=10**9, since_last_write_s=0)
    assert write_due(unwritten=MAX_UNWRITTEN_EVENTS, urgent=False, size=10**9, since_last_write_s=0)
    assert not write_due(unwritten=MAX_UNWRITTEN_EVENTS - 1, urgent=False, size=10**9, since_last_write_s=0)


def test_the_write_interval_grows_with_the_size() -> None:
    small = 1000
    assert not write_due(unwritten=1, urgent=False, size=small, since_last_write_s=MIN_WRITE_INTERVAL_S / 2)
    assert write_due(unwritten=1, urgent=False, size=small, since_last_write_s=MIN_WRITE_INTERVAL_S)
    large = 10 * WRITE_BYTES_PER_S  # ten seconds' worth
    assert not write_due(unwritten=1, urgent=False, size=large, since_last_write_s=9.9)
    assert write_due(unwritten=1, urgent=False, size=large, since_last_write_s=10.0)


def test_the_head_changes_with_the_workflows_own_state_only() -> None:
    status = new_status(Submitted(id="W", at=0, req=REQ))
    before = head(status)
    status.blocks[0].jobs[0].status = "running"
    assert head(status) == before
    status.status = "running"
    assert head(status) != before


def test_due_lists_the_unwritten_that_are_due_and_drops_the_rest() -> None:
    cache = Cache()
    cache.put("due", entry("due", unwritten=1))
    cache.put("waits", entry("waits", unwritten=1, last_write=100.0))
    cache.put("clean", entry("clean"))
    for wf_id in ("due", "waits", "clean", "gone"):
        cache.mark_unwritten(wf_id)
    assert [wf_id for wf_id, _ in cache.due(now=100.0)] == ["due"]
    assert list(cache.unwritten) == ["due", "waits"]


def test_an_ended_workflow_is_forgotten_once_written_unless_summarised() -> None:
    cache = Cache()
    for wf_id in ("running", "ended", "summarised"):
        cache.put(wf_id, entry(wf_id, unwritten=1, status="" if wf_id == "running" else "completed", last_write=5.0))
        cache.mark_unwritten(wf_id)
    cache.written("running", cache.entries["running"], summarised=False)
    cache.written("ended", cache.entries["ended"], summarised=False)
    cache.written("summarised", cache.entries["summarised"], summarised=True)
    assert list(cache.entries) == ["running", "summarised"] and not cache.unwritten
    assert cache.ended == {"summarised": 5.0}
    cache.entries["summarised"].events = []  # (written: nothing unwritten)
    cache.evict(now=5.0 + ENDED_KEEP_S - 0.1)
    assert "summarised" in cache.entries
    cache.evict(now=5.0 + ENDED_KEEP_S)
    assert "summarised" not in cache.entries and not cache.ended


def test_past_the_cache_size_the_least_recently_used_with_nothing_unwritten_go(monkeypatch) -> None:
    monkeypatch.setattr(cache_module, "CACHE_SIZE", 2)
    cache = Cache()
    cache.put("a", entry("a", unwritten=1))
    cache.put("b", entry("b"))
    cache.put("c", entry("c"))
    cache.get("b")  # used: now the most recent
    cache.evict(now=0.0)
    assert list(cache.entries) == ["a", "b"]  # "a" has unwritten events: kept


def test_forget_one_or_all() -> None:
    cache = Cache()
    for wf_id in ("a", "b"):
        cache.put(wf_id, entry(wf_id, unwritten=1))
        cache.mark_unwritten(wf_id)
    cache.ended["a"] = 1.0
    cache.forget("a")
    assert list(cache.entries) == ["b"] and list(cache.unwritten) == ["b"] and not cache.ended
    cache.forget()
    assert not cache.entries and not cache.unwritten
    assert cache.get("b") is None


def test_an_entry_is_due_by_its_own_pacing() -> None:
    e = entry(unwritten=1, last_write=1.0)
    assert not e.due(1.0)
    e.urgent = True
    assert e.due(1.0)
