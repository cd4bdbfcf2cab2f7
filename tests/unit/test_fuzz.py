"""Property-based fuzzing: no input crashes a decoder or a loader; bad input gets its own clear error."""

import asyncio
import json
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas import DECODE_ERRORS, command_decoder, event_decoder, workreq_decoder
from services.buckets import BucketConfigError, parse_bucket_configs
from services.common.endpoint import ApiError, decode_id
from services.intake.workreq_limits import Limits, check_limits
from services.inventory import InventoryError, load_inventory
from services.policy.decide import decide
from services.policy.registry import ConfigError, parse_policy_config
from services.safety.stops import EsConfigError, parse_es_config

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
# Values shaped like a WorkReq, so the fuzzing reaches past the first type error.
jobs = st.fixed_dictionaries(
    {"name": st.sampled_from(["sleep", "diskErase", "validateDecom", "tokenBucket", "x"]) | st.text(max_size=8)},
    optional={"desc": st.text(max_size=10), "args": st.dictionaries(
        st.sampled_from(["seconds", "site", "machine", "type", "bucket", "fatal", "zz"]),
        st.sampled_from(["1", "0", "-1", "aap", "aa01", "satellite", "diskEraseSatellite", "true", "false", ""]) | st.text(max_size=6),
        max_size=4)},
)
workreqs = st.fixed_dictionaries(
    {"name": st.sampled_from(["SatelliteDiskErase", "SleepDemo", "a.b", ""]) | st.text(max_size=10),
     "blocks": st.lists(st.fixed_dictionaries({"jobs": st.lists(jobs, max_size=4)},
                                              optional={"rate_limit": st.integers(-3, 3), "desc": st.text(max_size=5)}),
                        max_size=3)},
    optional={"desc": st.text(max_size=10), "max_failures": st.none() | st.integers(-2, 3)},
)


def encoded(value):
    return json.dumps(value).encode()


BAD_UTF8 = b'{"name": "SleepDemo", "desc": "bloc\xebs", "blocks": [{"jobs": [{"name": "sleep"}]}]}'  # found on the live bus


@FUZZ
@given(st.binary(max_size=300) | json_values.map(encoded) | workreqs.map(encoded))
@example(BAD_UTF8)
def test_the_workreq_decoder_only_ever_raises_decode_errors(data):
    try:
        req = workreq_decoder.decode(data)
    except DECODE_ERRORS:
        return
    assert check_limits(req, Limits()) is None or isinstance(check_limits(req, Limits()), str)


@FUZZ
@given(workreqs.map(encoded))
def test_deciding_any_decodable_workreq_gives_a_verdict_never_an_exception(jobs_registry_and_config, data):
    jobs, config = jobs_registry_and_config
    try:
        req = workreq_decoder.decode(data)
    except DECODE_ERRORS:
        return
    reason = asyncio.run(decide(req, jobs, config))
    assert reason is None or isinstance(reason, str) and reason


@FUZZ
@given(st.binary(max_size=200) | json_values.map(encoded))
@example(b'{"id": "\xe9"}')
def test_id_requests_are_400_or_404_or_an_id(data):
    try:
        wf_id = decode_id(data)
    except ApiError as err:
        assert err.code in (400, 404)
        return
    assert len(wf_id) == 26


@FUZZ
@given(st.binary(max_size=300) | json_values.map(encoded))
@example(b'{"type": "approved", "id": "\xff", "at": 1}')
def test_events_and_commands_from_the_streams_only_fail_to_decode(data):
    for decoder in (event_decoder, command_decoder):
        try:
            decoder.decode(data)
        except DECODE_ERRORS:
            pass


@FUZZ
@given(st.text(max_size=300) | json_values.map(json.dumps))
def test_config_loaders_raise_only_their_configuration_errors(jobs_registry_and_config, text):
    jobs, _ = jobs_registry_and_config
    from services.policy.registry import PolicyRegistry, builtin_policies

    for parse, error in (
        (lambda t: parse_policy_config(t, PolicyRegistry(builtin_policies()), jobs), ConfigError),
        (parse_es_config, EsConfigError),
        (parse_bucket_configs, BucketConfigError),
    ):
        try:
            parse(text)
        except error:
            pass


@FUZZ
@given(st.lists(json_values, max_size=5), st.lists(json_values, max_size=5))
def test_the_inventory_loader_raises_only_inventory_errors(tmp_path_factory, sites, machines):
    folder = tmp_path_factory.mktemp("inv")
    (folder / "sites.json").write_text("".join(json.dumps(v) + "\n" for v in sites))
    (folder / "machines.json").write_text("".join(json.dumps(v) + "\n" for v in machines))
    try:
        load_inventory(folder)
    except InventoryError:
        pass
