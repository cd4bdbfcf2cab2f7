"""Random and mutated messages to every endpoint through the live bus; the system must shrug them off."""

import json
import random

import pytest

from tests.conftest import REPO, wait_terminal
from wf import client
from wf.client import WfError
from wf.up import ping_services

pytestmark = pytest.mark.integration
ENDPOINTS = ("wf.api.submit", "wf.api.exec", "wf.api.status", "wf.api.cancel")
ANSWERS = {400, 404, 409, 412, 413, 423}  # a clear refusal; never a 500, never silence


def mutations(rng: random.Random, valid: bytes, count: int):
    """Bit flips, truncations, splices, type swaps and random bytes around a valid body."""
    doc = json.loads(valid)
    for _ in range(count):
        kind = rng.randrange(6)
        if kind == 0:
            data = bytearray(valid)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            yield bytes(data)
        elif kind == 1:
            yield valid[: rng.randrange(len(valid))]
        elif kind == 2:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        elif kind == 3:
            mutated = json.loads(valid)
            key = rng.choice(list(mutated))
            mutated[key] = rng.choice([None, 1, -1, "", [], {}, "x" * 300, True, 1e308])
            yield json.dumps(mutated).encode()
        elif kind == 4:
            yield json.dumps({"id": rng.choice(["", "0" * 26, "Z" * 26, "wf.evt.>", "*", "x" * 1000, 7])}).encode()
        else:
            yield json.dumps([doc, doc]).encode()


async def test_hundreds_of_bad_messages_change_nothing_and_everything_keeps_working(nc):
    rng = random.Random(20261126)
    valid = (REPO / "examples" / "sleep.json").read_bytes()
    codes = {}
    for subject in ENDPOINTS:
        for body in mutations(rng, valid, 100):
            try:
                await client.call(nc, subject, body, timeout_s=5)
            except WfError as err:
                codes[err.code] = codes.get(err.code, 0) + 1
                assert err.code in ANSWERS, (subject, body[:80], err)
    assert sum(codes.values()) >= 350, codes  # nearly all were refused, each with a clear code
    # uploads in parts: hostile ids and part numbers, mutated parts, submits of what was (not) uploaded
    for body in mutations(rng, valid, 60):
        upload = rng.choice(["u1", "fuzz-2", "", "../x", "a" * 65, "*", "wf.evt.>"])
        headers = {"Wf-Upload": upload, "Wf-Upload-Part": rng.choice(["0", "1", "-1", "x", "4096", "", "9" * 30])}
        for subject, sent in (("wf.api.upload", body), ("wf.api.submit", b"")):
            try:
                await client.call(nc, subject, sent, timeout_s=5, headers=headers)
            except WfError as err:
                assert err.code in ANSWERS, (subject, headers, sent[:80], err)
            headers = {"Wf-Upload": upload, "Wf-Upload-Parts": rng.choice(["1", "2", "0", "x", "4097"])}
    assert await ping_services(nc, wait_s=1.0) == {"wf-intake": 1, "wf-policy": 1, "wf-executor": 1, "wf-status": 1, "wf-jobrunner": 2}
    reply = await client.submit(nc, valid)
    await client.execute(nc, reply["id"])
    assert (await wait_terminal(nc, reply["id"]))["status"] == "completed"  # a normal workflow after the fuzzing
