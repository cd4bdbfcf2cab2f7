"""diskErase, validateDecom and tokenBucket: validation at submit, behaviour when run."""

import asyncio
import json

import pytest

from services.buckets import BucketConfig, BucketState, parse_duration_s, refilled, seconds_to_next_token
from services.inventory import InventorySource
from services.jobs import ArgError, JobContext, JobError
from services.jobs.token_bucket import TokenBucketJob
from services.jobs.validate_decom import ValidateDecomJob


def ctx():
    return JobContext(workflow_id="W", block=0, job=0, attempt=1, time_scale=0.0)


@pytest.mark.parametrize(
    "args, arg, fragment",
    [
        ({"machine": "aa01", "site": "zzz"}, "site", "not in the inventory"),
        ({"machine": "zz99", "site": "aap"}, "machine", "not at site 'aap'"),
        ({"machine": "aa01", "site": "aab"}, "machine", "not at site 'aab'"),  # a cluster lists no machines
    ],
)
def test_disk_erase_needs_a_known_machine_at_a_known_site(jobs, args, arg, fragment):
    with pytest.raises(ArgError) as err:
        jobs.validate("diskErase", args)
    assert err.value.arg == arg and fragment in err.value.message


def test_disk_erase_accepts_a_machine_of_the_site(jobs):
    jobs.validate("diskErase", {"machine": "ae09", "site": "aap"})


@pytest.mark.parametrize(
    "args, arg, fragment",
    [
        ({"site": "zzz", "type": "satellite"}, "site", "not in the inventory"),
        ({"site": "aaa", "type": "satellite"}, "site", "inService, not decom"),
        ({"site": "aap", "type": "cluster"}, "type", "is a satellite, not a cluster"),
        ({"site": "aap", "type": "moon"}, "type", "not one of"),
    ],
)
def test_validate_decom_at_submit(jobs, args, arg, fragment):
    with pytest.raises(ArgError) as err:
        jobs.validate("validateDecom", args)
    assert err.value.arg == arg and fragment in err.value.message


async def test_validate_decom_fails_fatally_when_the_site_left_decom_or_the_inventory(tmp_path):
    def write(status=None):
        (tmp_path / "sites.json").write_text(json.dumps({"Name": "aap", "Type": "satellite", "Status": status}) + "\n" if status else "")
        (tmp_path / "machines.json").write_text("")

    job = ValidateDecomJob(InventorySource(tmp_path))
    args = {"site": "aap", "type": "satellite"}
    write("decom")
    job.validate(args)
    await job.run(args, ctx())  # still decom: passes
    write("inService")
    with pytest.raises(JobError) as err:
        await job.run(args, ctx())
    assert err.value.fatal and "no longer decom" in err.value.message
    write(None)
    with pytest.raises(JobError) as err:
        await job.run(args, ctx())
    assert err.value.fatal and "no longer in the inventory" in err.value.message


@pytest.mark.parametrize("fatal", ["yes", "True", "FALSE", "", "0"])
def test_token_bucket_fatal_is_true_or_false_and_nothing_else(jobs, fatal):
    with pytest.raises(ArgError) as err:
        jobs.validate("tokenBucket", {"bucket": "diskEraseSatellite", "fatal": fatal})
    assert err.value.arg == "fatal"


def test_token_bucket_needs_a_configured_bucket(jobs):
    jobs.validate("tokenBucket", {"bucket": "diskEraseSatellite", "fatal": "false"})
    with pytest.raises(ArgError) as err:
        jobs.validate("tokenBucket", {"bucket": "nope", "fatal": "true"})
    assert err.value.arg == "bucket" and "diskEraseSatellite" in err.value.message


class EmptyThenFullStore:
    """An in-memory stand-in for the KV-backed store: no token for `empty_s`, then one."""

    def __init__(self, empty_s):
        self.until = asyncio.get_running_loop().time() + empty_s
        self.calls = 0

    async def take(self, name, config):
        self.calls += 1
        left = self.until - asyncio.get_running_loop().time()
        return 0.0 if left <= 0 else left


CONFIG = {"b": BucketConfig(size=1, refill=1, every="30m")}


async def test_token_bucket_fatal_true_waits_one_second_then_fails_fatally():
    job = TokenBucketJob(CONFIG, EmptyThenFullStore(empty_s=60))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(JobError) as err:
        await job.run({"bucket": "b", "fatal": "true"}, ctx())
    assert err.value.fatal and 0.9 <= loop.time() - started < 1.5


async def test_token_bucket_fatal_false_waits_for_the_token_instead_of_failing():
    """The seed parsed "false" as true and failed here; "false" means wait."""
    store = EmptyThenFullStore(empty_s=1.3)
    await TokenBucketJob(CONFIG, store).run({"bucket": "b", "fatal": "false"}, ctx())
    assert store.calls <= 3, "it should sleep until the token is due, not poll"


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("1s", 1), ("1h30m", 5400), ("500ms", 0.5), ("2h", 7200)])
def test_durations(text, seconds):
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "m", "-1s", "0s", "1d", "1s "])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration_s(text)


def test_refill_adds_whole_intervals_up_to_the_size():
    config = BucketConfig(size=3, refill=1, every="10s")
    empty = BucketState(tokens=0, at=100.0)
    assert refilled(empty, config, 109.9).tokens == 0
    assert seconds_to_next_token(empty, config, 105.0) == pytest.approx(5.0)
    assert refilled(empty, config, 110.0) == BucketState(1, 110.0)
    assert refilled(empty, config, 125.0) == BucketState(2, 120.0)
    assert refilled(empty, config, 1000.0).tokens == 3
    full = BucketState(tokens=3, at=0.0)
    assert refilled(full, config, 500.0) == BucketState(3, 500.0)  # a full bucket banks no time


def test_the_wait_for_a_token_is_never_longer_than_one_interval():
    config = BucketConfig(size=1, refill=1, every="10s")
    # `at` written by another taker whose clock reads 0.2 s ahead of this one's
    ahead = BucketState(tokens=0, at=100.2)
    assert refilled(ahead, config, 100.0) == ahead
    assert seconds_to_next_token(ahead, config, 100.0) == 10.0


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"Name": "A", "Status": "Go"}', "Status must be"),
        ('{"Name": "A"}', "missing required field `Status`"),
        ('{"Name": "A", "Status": "go"}\n{"Name": "A", "Status": "stop"}', "appears twice"),
        ("{broken", "not a stream of JSON objects"),
    ],
)
def test_a_bad_es_json_is_refused(text, fragment):
    from services.safety.stops import EsConfigError, parse_es_config

    with pytest.raises(EsConfigError, match=fragment):
        parse_es_config(text)
