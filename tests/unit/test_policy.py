from pathlib import Path

import pytest

from schemas import workreq_decoder
from services.policy.decide import decide
from services.policy.policies.restrict_job_types import RestrictJobTypes
from services.policy.registry import (
    ConfigError,
    PolicyRegistry,
    load_policy_config,
    parse_policy_config,
)

REPO = Path(__file__).resolve().parents[2]


def req(name="SleepDemo", *jobs):
    blocks = ",".join(f'{{"jobs": [{j}]}}' for j in jobs) or '{"jobs": [{"name": "sleep", "args": {"seconds": "1"}}]}'
    return workreq_decoder.decode(f'{{"name": "{name}", "blocks": [{blocks}]}}'.encode())


SLEEP = '{"name": "sleep", "args": {"seconds": "1"}}'
CONFIG = '{"Name": "SleepDemo", "Policies": [{"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["sleep"]}}]}'


async def test_the_shipped_configuration_loads(jobs, policies):
    config = load_policy_config(REPO / "configs" / "policies.json", policies, jobs)
    assert {"SleepDemo", "SatelliteDiskErase"} <= set(config.by_name)


async def test_an_allowed_workreq_is_approved(jobs, policies):
    config = parse_policy_config(CONFIG, policies, jobs)
    assert await decide(req("SleepDemo", SLEEP, SLEEP), jobs, config) is None


async def test_no_policy_for_the_name_means_rejected(jobs, policies):
    config = parse_policy_config(CONFIG, policies, jobs)
    assert await decide(req("Unconfigured", SLEEP), jobs, config) == "no policy for WorkReq name 'Unconfigured'"


async def test_an_invalid_job_is_rejected_naming_block_job_and_argument(jobs, policies):
    config = parse_policy_config(CONFIG, policies, jobs)
    reason = await decide(req("SleepDemo", SLEEP, f'{SLEEP}, {{"name": "sleep", "args": {{"seconds": "0"}}}}'), jobs, config)
    assert reason is not None
    assert reason.startswith("invalid job: block 1 job 1 (sleep) argument 'seconds':")


async def test_restrict_job_types_names_the_policy_and_the_job(jobs, policies):
    other = RestrictJobTypes().build({"AllowedJobs": []}, jobs)
    from services.policy.registry import NamedCheck, PolicyConfig

    config = PolicyConfig({"SleepDemo": (NamedCheck("restrictJobTypes", other),)})
    reason = await decide(req("SleepDemo", SLEEP), jobs, config)
    assert reason == "policy(restrictJobTypes) violation: block 0 job 0: job 'sleep' is not in AllowedJobs"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{not json", "not a stream of JSON objects"),
        ('{"Name": "A", "Policies": [{"Name": "noSuchPolicy"}]}', "unknown policy 'noSuchPolicy'"),
        ('{"Name": "A", "Policies": [{"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["rm"]}}]}', "unregistered job 'rm'"),
        ('{"Name": "A", "Policies": [{"Name": "restrictJobTypes", "Settings": {"Allowed": ["sleep"]}}]}', "bad Settings"),
        ('{"Name": "A", "Policies": [{"Name": "restrictJobTypes", "Settings": {"AllowedJobs": "sleep"}}]}', "bad Settings"),
        (CONFIG + "\n" + CONFIG, "appears twice"),
        ('{"Name": "A"}', "missing required field `Policies`"),
        ("[1, 2]", "entry 1"),
    ],
)
async def test_a_bad_configuration_is_an_error_saying_where(jobs, policies, text, fragment):
    with pytest.raises(ConfigError) as err:
        parse_policy_config(text, policies, jobs)
    assert fragment in str(err.value)


async def test_the_configuration_is_a_stream_of_objects_pretty_printed_or_not(jobs, policies):
    pretty = '{\n  "Name": "B",\n  "Policies": [\n    {"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["sleep"]}}\n  ]\n}\n'
    config = parse_policy_config(CONFIG + "\n" + pretty, policies, jobs)
    assert set(config.by_name) == {"SleepDemo", "B"}
    assert await decide(req("B", SLEEP), jobs, config) is None
    with pytest.raises(ConfigError, match="Policies is empty"):  # once approved everything: fails closed now
        parse_policy_config(CONFIG + '\n{"Name": "B", "Policies": []}', policies, jobs)


def test_a_policy_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        PolicyRegistry([RestrictJobTypes(), RestrictJobTypes()])
