"""The workflows' projections in memory: one `Entry` per workflow (what KV has, by revision, plus the
events folded in and not written yet), and the `Cache` of them, pure bookkeeping, no I/O.

Memory stays proportional to the workflows running: an ended workflow is forgotten once written (a
late event reloads it from KV: one get), except one written as a summary (its reload is a rebuild
from the whole history, which once per batch of late events or redeliveries, those coming after
the consumer's ack wait, would be quadratic): that one stays ENDED_KEEP_S after its last write.
Past CACHE_SIZE the least recently used with nothing unwritten go."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from nats.aio.msg import Msg

from schemas import Event, StatusResp
from services.common.topology import STATUS_ACK_WAIT_S

from .pacing import write_due

CACHE_SIZE = 2000
ENDED_KEEP_S = 2 * STATUS_ACK_WAIT_S


@dataclass
class Entry:
    """One workflow's projection in memory: what KV has (revision) plus what it does not yet."""

    status: StatusResp
    revision: int  # 0: not in KV yet
    events: list[Event] = field(default_factory=list)  # folded in, not yet written
    msgs: list[Msg] = field(default_factory=list)  # to ack once written
    urgent: bool = False  # the head changed (new, verdict, started, ended): write now
    rebuilt: bool = False  # folded from WF_EVENTS, newer than KV's summary: write even without change
    last_write: float = 0.0
    size: int = 0

    def due(self, now: float) -> bool:
        return write_due(unwritten=len(self.events), urgent=self.urgent, size=self.size,
                         since_last_write_s=now - self.last_write)


class Cache:
    def __init__(self) -> None:
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        # the workflows with events not yet written, oldest first: each flush looks at these only,
        # not at every workflow in memory (up to CACHE_SIZE approved ones may wait for their exec)
        self.unwritten: dict[str, None] = {}
        # the ended workflows kept in memory (written as summaries), with their last write, oldest first
        self.ended: dict[str, float] = {}

    def get(self, wf_id: str) -> Entry | None:
        """The workflow's entry, now the most recently used; None when not in memory."""
        entry = self.entries.get(wf_id)
        if entry is not None:
            self.entries.move_to_end(wf_id)
        return entry

    def put(self, wf_id: str, entry: Entry) -> None:
        self.entries[wf_id] = entry
        self.entries.move_to_end(wf_id)

    def mark_unwritten(self, wf_id: str) -> None:
        self.unwritten[wf_id] = None

    def due(self, now: float) -> list[tuple[str, Entry]]:
        """The workflows to write now (pacing.py), oldest first; those with nothing left to write
        leave the unwritten ones."""
        due: list[tuple[str, Entry]] = []
        for wf_id in list(self.unwritten):
            entry = self.entries.get(wf_id)
            if entry is None or not entry.events:
                del self.unwritten[wf_id]
            elif entry.due(now):
                due.append((wf_id, entry))
        return due

    def written(self, wf_id: str, entry: Entry, *, summarised: bool) -> None:
        """After the workflow's write: an ended one is forgotten, unless it was written as a summary."""
        del self.unwritten[wf_id]
        if entry.status.status in ("completed", "failed"):
            self.ended.pop(wf_id, None)
            if summarised:
                self.ended[wf_id] = entry.last_write
            else:
                del self.entries[wf_id]

    def forget(self, wf_id: str | None = None) -> None:
        """Drop one workflow's unwritten state (None: every workflow's); it is reloaded from KV."""
        if wf_id is None:
            self.entries.clear()
            self.unwritten.clear()
            self.ended.clear()
        else:
            self.entries.pop(wf_id, None)
            self.unwritten.pop(wf_id, None)
            self.ended.pop(wf_id, None)

    def evict(self, now: float) -> None:
        """Forget the summarised workflows ended more than ENDED_KEEP_S ago, then the oldest with
        nothing unwritten beyond CACHE_SIZE: memory stays proportional to the workflows running."""
        for wf_id, ended_at in list(self.ended.items()):
            if now - ended_at < ENDED_KEEP_S:
                break
            del self.ended[wf_id]
            entry = self.entries.get(wf_id)
            if entry is not None and not entry.events:
                del self.entries[wf_id]
        if len(self.entries) <= CACHE_SIZE:
            return
        for wf_id in list(self.entries):
            if len(self.entries) <= CACHE_SIZE:
                return
            if not self.entries[wf_id].events:
                del self.entries[wf_id]
                self.ended.pop(wf_id, None)
