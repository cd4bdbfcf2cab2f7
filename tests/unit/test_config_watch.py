"""The policies.json watcher's own logic: reload on change, fail closed, write its state once."""

import json
from pathlib import Path

import nats.errors

from services.policy.config_watch import PolicyConfigWatcher

REPO = Path(__file__).resolve().parents[2]


class RecordingKV:
    """Records the states written; can be told to fail, as KV does while NATS is unreachable."""

    def __init__(self):
        self.states = []
        self.failing = False

    async def put(self, key, value):
        if self.failing:
            raise nats.errors.TimeoutError
        self.states.append((key, json.loads(value)))


async def test_reloads_on_change_fails_closed_keeps_the_last_good_and_writes_each_state_once(tmp_path, jobs, policies):
    path = tmp_path / "policies.json"
    good = (REPO / "configs" / "policies.json").read_text()
    path.write_text(good)
    kv = RecordingKV()
    watcher = PolicyConfigWatcher(path, policies, jobs, kv)
    for _ in range(3):
        await watcher.reload_if_changed()
        await watcher.publish_state()
    assert [s["ok"] for _, s in kv.states] == [True]
    assert watcher.usable is not None and "SatelliteDiskErase" in watcher.usable.by_name

    path.write_text(good + '{"Name": "X", "Policies": [{"Name": "nope"}]}\n')
    await watcher.reload_if_changed()
    assert watcher.usable is None  # fail closed
    assert watcher.config is not None  # but the last good one is kept
    assert kv.states[-1][1]["ok"] is False and "unknown policy 'nope'" in kv.states[-1][1]["error"]

    kv.failing = True
    path.write_text(good)
    await watcher.reload_if_changed()
    assert watcher.usable is not None  # decisions resume even while the state cannot be written
    kv.failing = False
    await watcher.publish_state()
    await watcher.publish_state()
    assert [s["ok"] for _, s in kv.states] == [True, False, True]
