"""The emergency-stop view (services/safety/stops.py): what a follower of `wf_es` holds, replayed from
messages as the bucket's stream delivers them, and when it must read the whole bucket again."""

import asyncio
from types import SimpleNamespace

import services.safety.stops as es_module
from services.safety.stops import EmergencyStops, EsMessage, EsView, es_message


def put(key, seq, value="go", rollup_all=False):
    return EsMessage(key, seq, value, rollup_all)


def delete(key, seq):
    return EsMessage(key, seq, None)


def test_puts_deletes_and_purge_markers():
    view = EsView()
    assert view.apply(put("A", 1)) == {"A": "go"}
    assert view.apply(put("B", 2, "stop")) == {"B": "stop"}
    assert view.apply(put("A", 3)) == {}  # the same value again: no change
    assert view.apply(delete("A", 4)) == {"A": None}
    assert view.values == {"B": "stop"}
    assert view.seqs == {"A": 4, "B": 2}  # the marker is a message of the stream too
    assert view.agrees_with(messages=2, last_seq=4)


def test_a_rollup_all_removes_every_key_written_before_it():
    view = EsView()
    for seq, key in enumerate("ABC", start=1):
        view.apply(put(key, seq))
    changed = view.apply(put("Other", 4, rollup_all=True))
    assert changed == {"A": None, "B": None, "C": None, "Other": "go"}
    assert view.values == {"Other": "go"} and view.agrees_with(messages=1, last_seq=4)


def test_a_rollup_all_delete_marker_leaves_nothing_go():
    view = EsView()
    view.apply(put("A", 1))
    view.apply(put("B", 2))
    assert view.apply(EsMessage("B", 3, None, rollup_all=True)) == {"A": None, "B": None}
    assert view.values == {}


def test_a_rollup_seen_after_later_keys_keeps_them():
    """Order-proof: only what was written before the rollup is gone."""
    view = EsView()
    view.apply(put("Late", 7))
    view.apply(put("Other", 5, rollup_all=True))
    assert view.values == {"Late": "go", "Other": "go"}


def test_a_purge_of_the_stream_is_seen_as_disagreement_not_as_being_behind():
    view = EsView()
    for seq, key in enumerate("ABC", start=1):
        view.apply(put(key, seq))
    assert view.agrees_with(messages=3, last_seq=3) is True
    assert view.agrees_with(messages=0, last_seq=3) is False  # `nats stream purge KV_wf_es`
    assert view.agrees_with(messages=2, last_seq=3) is False  # one message deleted (`nats stream rmm`)
    assert view.agrees_with(messages=4, last_seq=4) is None  # a put on its way: wait for it
    assert view.agrees_with(messages=1, last_seq=2) is False  # the stream was made anew


def test_messages_are_read_as_the_kv_protocol_means_them():
    assert es_message("$KV.wf_es.SleepDemo", 3, None, b"go") == EsMessage("SleepDemo", 3, "go")
    assert es_message("$KV.wf_es.A", 4, {"KV-Operation": "DEL"}, b"").value is None
    assert es_message("$KV.wf_es.A", 5, {"KV-Operation": "PURGE", "Nats-Rollup": "sub"}, b"") == EsMessage("A", 5, None)
    assert es_message("$KV.wf_es.A", 6, {"Nats-Marker-Reason": "MaxAge"}, b"").value is None
    assert es_message("$KV.wf_es.X", 7, {"Nats-Rollup": "all"}, b"go") == EsMessage("X", 7, "go", rollup_all=True)
    assert es_message("$KV.wf_es.X", 8, {"Nats-Rollup": "ALL"}, b"\xff").rollup_all
    assert es_message("$KV.other.X", 9, None, b"go") is None


def test_a_new_state_stops_every_name_it_no_longer_holds_and_tells_the_listeners():
    es = EmergencyStops()
    seen = []
    es.on_change(lambda name, state: seen.append((name, state)))
    es._replace({"A": "go", "B": "go", "C": "stop"})
    assert sorted(seen) == [("A", "go"), ("B", "go")]
    seen.clear()
    es._replace({"Other": "go"})  # after a rollup-all or a purge, read anew
    assert sorted(seen) == [("A", "stop"), ("B", "stop"), ("Other", "go")]
    assert not es.is_go("A") and es.is_go("Other") and es.snapshot() == {"Other": "go"}


def test_pause_is_a_third_state_and_every_other_value_is_still_stop():
    es = EmergencyStops()
    seen = []
    es.on_change(lambda name, state: seen.append((name, state)))
    es._replace({"A": "pause", "B": "go", "C": "Pause", "D": "pause ", "E": "paused", "F": ""})
    assert sorted(seen) == [("A", "pause"), ("B", "go")]
    assert es.state("A") == "pause" and not es.is_go("A") and not es.is_stopped("A")
    for name in ("C", "D", "E", "F", "Missing"):
        assert es.state(name) == "stop" and es.is_stopped(name) and not es.is_go(name)
    seen.clear()
    es._set("A", "stop")  # pause -> stop, stop -> go, go -> pause: each change told
    es._set("A", "go")
    es._set("A", "pause")
    es._set("A", "pause")  # no change
    es._set("A", None)  # deleted: stop
    assert seen == [("A", "stop"), ("A", "go"), ("A", "pause"), ("A", "stop")]


# ---------------------------------------------------------------- the follower's loop, with a fake stream


class FakeStream:
    """Only what `EmergencyStops._live` asks of JetStream: the stream's state."""

    def __init__(self, messages, last_seq):
        self.messages, self.last_seq = messages, last_seq

    async def stream_info(self, name):
        assert name == "KV_wf_es"
        return SimpleNamespace(state=SimpleNamespace(messages=self.messages, last_seq=self.last_seq))


def kv_msg(key, seq, value=b"go", headers=None):
    return SimpleNamespace(subject=f"$KV.wf_es.{key}", headers=headers, data=value,
                           metadata=SimpleNamespace(sequence=SimpleNamespace(stream=seq)))


async def test_the_follower_applies_what_arrives_as_a_check_falls_due_and_reads_again_after_a_purge(monkeypatch):
    monkeypatch.setattr(es_module, "VERIFY_S", 0.0)  # a check is always due: messages must still be taken
    es, view, stream, stop = EmergencyStops(), EsView(), FakeStream(2, 2), asyncio.Event()
    queue = asyncio.Queue()
    queue.put_nowait(kv_msg("A", 1))
    queue.put_nowait(kv_msg("B", 2))
    follower = asyncio.create_task(es._live(stream, "wf_es", queue, view, stop))
    try:
        async with asyncio.timeout(2):
            while not (es.is_go("A") and es.is_go("B")):
                await asyncio.sleep(0.01)
        assert not follower.done(), "the view agrees with the stream: it keeps following"
        stream.messages = 0  # `nats stream purge KV_wf_es`: no message says so
        await asyncio.wait_for(follower, 2)  # it returns, for the caller to read everything again
    finally:
        stop.set()
        follower.cancel()


async def test_the_follower_stops_every_name_written_before_a_rollup_at_once():
    es, view, stream, stop = EmergencyStops(), EsView(), FakeStream(3, 3), asyncio.Event()
    queue = asyncio.Queue()
    for seq, key in enumerate(("A", "B"), start=1):
        queue.put_nowait(kv_msg(key, seq))
    queue.put_nowait(kv_msg("Other", 3, headers={"Nats-Rollup": "all"}))
    stream.messages = 1
    follower = asyncio.create_task(es._live(stream, "wf_es", queue, view, stop))
    try:
        async with asyncio.timeout(2):
            while not es.is_go("Other"):
                await asyncio.sleep(0.01)
        assert es.snapshot() == {"Other": "go"}
    finally:
        stop.set()
        await asyncio.wait_for(follower, 2)
