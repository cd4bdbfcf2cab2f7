"""sameArgs and startOrEnd, the shipped SatelliteDiskErase entry, and how policies run."""

import json
from pathlib import Path

import pytest

from schemas import workreq_decoder
from services.inventory import load_inventory
from services.policy.decide import decide
from services.policy.policies.same_args import SameArgs
from services.policy.policies.start_or_end import StartOrEnd
from services.policy.registry import (
    ConfigError,
    NamedCheck,
    PolicyConfig,
    PolicyViolation,
    load_policy_config,
)
from wf.erase import EraseRefused, erase_satellite_workreq

REPO = Path(__file__).resolve().parents[2]
TOKEN = {"name": "tokenBucket", "args": {"bucket": "diskEraseSatellite", "fatal": "true"}}
DECOM = {"name": "validateDecom", "args": {"site": "aap", "type": "satellite"}}


def erase(machine, site="aap"):
    return {"name": "diskErase", "args": {"machine": machine, "site": site}}


def sleep(seconds="1"):
    return {"name": "sleep", "args": {"seconds": seconds}}


def req(*blocks, name="SatelliteDiskErase"):
    return workreq_decoder.decode(json.dumps({"name": name, "blocks": [{"jobs": list(b)} for b in blocks]}).encode())


@pytest.fixture
def shipped(jobs, policies):
    return load_policy_config(REPO / "configs" / "policies.json", policies, jobs)


async def test_the_clients_erase_of_a_decom_satellite_is_approved(jobs, shipped):
    body = erase_satellite_workreq(load_inventory(REPO / "data"), "aap")
    assert await decide(workreq_decoder.decode(json.dumps(body).encode()), jobs, shipped) is None
    assert len(body["blocks"]) == 11 and body["blocks"][0]["desc"] == "Check pre-conditions"
    assert [j["name"] for j in body["blocks"][1]["jobs"]] == ["diskErase"] * 5 + ["sleep"]
    assert [j["name"] for j in body["blocks"][-1]["jobs"]] == ["diskErase"] * 5
    assert body["blocks"][1]["desc"] == "Erase machines aa00..aa04 at aap" and body["blocks"][1]["rate_limit"] == 5


@pytest.mark.parametrize("site, fragment", [("zzz", "not in the inventory"), ("aab", "not a satellite"), ("aaa", "only a satellite in decom")])
def test_the_client_refuses_sites_it_must_not_erase(site, fragment):
    with pytest.raises(EraseRefused, match=fragment):
        erase_satellite_workreq(load_inventory(REPO / "data"), site)


async def test_same_args_rejects_mixed_sites(jobs, shipped):
    reason = await decide(req([DECOM, TOKEN], [erase("aa00"), erase("aa01", site="adg")]), jobs, shipped)
    assert reason == ("policy(sameArgs) violation: job 'diskErase' argument 'site' differs: "
                      "'aap' (block 1 job 0) vs 'adg' (block 1 job 1)")


def test_same_args_with_the_seeds_Site_key_is_a_configuration_error(jobs):
    """The seed shipped {"diskErase": ["Site"]}: an arg no job has, so nothing was ever checked."""
    with pytest.raises(ConfigError, match="job 'diskErase' has no argument 'Site'"):
        SameArgs().build({"Jobs": {"diskErase": ["Site"]}}, jobs)
    with pytest.raises(ConfigError, match="unregistered job 'eraseAll'"):
        SameArgs().build({"Jobs": {"eraseAll": ["site"]}}, jobs)


def test_same_args_treats_a_missing_optional_arg_as_a_different_value(jobs):
    check = SameArgs().build({"Jobs": {"sleep": ["seconds"]}}, jobs)
    check(req([sleep("5"), sleep("5")]))
    with pytest.raises(PolicyViolation):
        check(req([sleep("5")], [sleep("6")]))


async def test_start_or_end_rejects_a_sleep_before_the_token(jobs, shipped):
    reason = await decide(req([sleep(), DECOM, TOKEN], [erase("aa00")]), jobs, shipped)
    assert reason == "policy(startOrEnd) violation: the first job of the first block must be 'tokenBucket', found 'sleep'"


async def test_start_or_end_checks_must_args(jobs, shipped, job_env):
    other = {"name": "tokenBucket", "args": {"bucket": "diskEraseSatellite", "fatal": "false"}}
    assert await decide(req([DECOM, other], [erase("aa00")]), jobs, shipped) is None  # fatal is not a MustArg
    check = StartOrEnd().build({"JobName": "tokenBucket", "MustArgs": {"fatal": "true"}, "Start": True}, jobs)
    with pytest.raises(PolicyViolation, match="must have fatal='true', has 'false'"):
        check(req([other]))


def test_start_or_end_from_the_back_of_the_last_block_never_crashes(jobs):
    """The seed indexed past the end of the last block here and crashed."""
    check = StartOrEnd().build({"JobName": "tokenBucket", "End": True, "AllowedBeforeOrAfter": ["sleep"]}, jobs)
    check(req([erase("aa00")], [TOKEN, sleep(), sleep()]))
    with pytest.raises(PolicyViolation, match="found only allowed jobs"):
        check(req([TOKEN], [sleep()]))
    with pytest.raises(PolicyViolation, match="found 'diskErase'"):
        check(req([TOKEN], [TOKEN, erase("aa00")]))


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"JobName": "tokenBucket", "Start": True, "End": True}, "exactly one of Start and End"),
        ({"JobName": "tokenBucket"}, "exactly one of Start and End"),
        ({"JobName": "nope", "Start": True}, "unregistered job 'nope'"),
        ({"JobName": "tokenBucket", "Start": True, "MustArgs": {"Bucket": "x"}}, "no argument 'Bucket'"),
        ({"JobName": "tokenBucket", "Start": True, "AllowedBeforeOrAfter": ["x"]}, "unregistered job 'x'"),
        ({"JobName": "tokenBucket", "Start": "yes"}, "bad Settings"),
    ],
)
def test_start_or_end_configuration_errors(jobs, settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        StartOrEnd().build(settings, jobs)


async def test_policies_cannot_change_what_other_policies_see(jobs):
    seen = []

    def vandal(r):
        r.blocks[0].jobs[0].args["seconds"] = "999"
        r.blocks.clear()

    def observer(r):
        seen.append((len(r.blocks), r.blocks[0].jobs[0].args["seconds"]))

    config = PolicyConfig({"X": (NamedCheck("vandal", vandal), NamedCheck("observer", observer))})
    original = req([sleep("5")], name="X")
    assert await decide(original, jobs, config) is None
    assert seen == [(1, "5")]
    assert original.blocks[0].jobs[0].args["seconds"] == "5"


async def test_the_first_violation_in_configured_order_is_reported(jobs):
    def violated(detail):
        def check(r):
            raise PolicyViolation(detail)

        return check

    config = PolicyConfig({"X": (NamedCheck("a", lambda r: None), NamedCheck("b", violated("B")), NamedCheck("c", violated("C")))})
    assert await decide(req([sleep()], name="X"), jobs, config) == "policy(b) violation: B"


def test_max_failures_requires_a_budget_no_larger_than_max(jobs):
    from services.policy.policies.max_failures import MaxFailures

    check = MaxFailures().build({"Max": 2}, jobs)
    body = {"name": "X", "blocks": [{"jobs": [sleep()]}]}
    for budget in (0, 2):
        check(workreq_decoder.decode(json.dumps({**body, "max_failures": budget}).encode()))
    with pytest.raises(PolicyViolation, match="max_failures must be set, at most 2"):
        check(workreq_decoder.decode(json.dumps(body).encode()))
    with pytest.raises(PolicyViolation, match="max_failures 3 is above Max 2"):
        check(workreq_decoder.decode(json.dumps({**body, "max_failures": 3}).encode()))
    with pytest.raises(ConfigError, match="bad Settings"):
        MaxFailures().build({"Max": -1}, jobs)
