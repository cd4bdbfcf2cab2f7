"""Strict input: a key twice in one object is a 400, numbers have bounds, an empty policy list is a
configuration error. The duplicate-key count (services/common/strictjson.py) is checked against
the exact check on generated documents, duplicates placed anywhere."""

from __future__ import annotations

import json
import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import encoder, workreq_decoder
from services.common.endpoint import ApiError, decode_id
from services.common.ids import new_id
from services.common.jsonstream import json_stream
from services.common.strictjson import find_duplicate_key, provably_unique, workreq_duplicate_key
from services.policy.registry import ConfigError, PolicyRegistry, builtin_policies, parse_policy_config

JOB = '{"name": "sleep", "args": {"seconds": "1"}}'


# ---------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize("body, key, where", [
    ('{"name": "a", "name": "b", "blocks": [{"jobs": [%s]}]}' % JOB, "name", "$"),
    ('{"name": "a", "blocks": [{"jobs": [{"name": "sleep", "args": {"seconds": "1", "seconds": "99"}}]}]}',
     "seconds", "$.blocks[0].jobs[0].args"),
    ('{"name": "a", "blocks": [{"jobs": [%s]}, {"rate_limit": 1, "rate_limit": 9, "jobs": [%s]}]}' % (JOB, JOB),
     "rate_limit", "$.blocks[1]"),
    ('{"name": "a", "blocks": [{"jobs": [%s]}], "blocks": [{"jobs": [%s]}]}' % (JOB, JOB), "blocks", "$"),
    ('{"name": "a", "blocks": [{"jobs": [{"name": "sleep", "args": {"a:b": "1", "a:b": "2"}}]}]}', "a:b",
     "$.blocks[0].jobs[0].args"),
])
def test_a_repeated_key_anywhere_is_found_and_located(body, key, where):
    data = body.encode()
    workreq_decoder.decode(data)  # msgspec alone takes it: last wins
    message = find_duplicate_key(data)
    assert message == f"duplicate key {key!r} at `{where}`: a key may appear only once in an object"
    assert workreq_duplicate_key(data, workreq_decoder.decode(data), encoder.encode(workreq_decoder.decode(data)),
                                 exact_below=0) == message


def test_unique_keys_and_non_json_are_not_duplicates():
    assert find_duplicate_key(b'{"name": "a", "blocks": [{"jobs": [{"name": "x", "args": {"name": "y"}}]}]}') is None
    assert find_duplicate_key(b"not json") is None  # the decoder's error is the one to report
    assert find_duplicate_key('{"a": {"a": {"a": 1}}}') is None


def test_an_id_request_with_a_repeated_key_is_a_400():
    wf_id = new_id()
    assert decode_id(f'{{"id": "{wf_id}"}}'.encode()) == wf_id
    with pytest.raises(ApiError) as err:
        decode_id(f'{{"id": "{new_id()}", "id": "{wf_id}"}}'.encode())
    assert err.value.code == 400 and "duplicate key 'id'" in err.value.message


def big_workreq(jobs: int, **extra) -> bytes:
    """The benchmark's shape: blocks of 1,000 jobs, no default spelled out."""
    job = {"name": "diskErase", "desc": "erase a machine: aa01", "args": {"machine": "aa01", "site": "aap"}}
    per = 1000
    blocks = [{"desc": f"block {b}", "rate_limit": 5, "jobs": [job] * per} for b in range(jobs // per)]
    return json.dumps({"name": "SatelliteDiskErase", "blocks": blocks, **extra}).encode()


def test_a_large_workreq_that_leaves_defaults_out_is_proven_unique_without_the_exact_pass():
    for extra in ({}, {"max_failures": None}, {"max_failures": 3, "desc": "d"}):
        data = big_workreq(5_000, **extra)
        req = workreq_decoder.decode(data)
        assert provably_unique(data, req, encoder.encode(req)), extra


def test_a_large_workreq_with_a_repeated_key_is_not_proven_unique():
    data = big_workreq(5_000).replace(b'"site": "aap"}', b'"site": "aap", "site": "aap"}', 1)
    req = workreq_decoder.decode(data)
    assert not provably_unique(data, req, encoder.encode(req))
    assert "duplicate key 'site' at `$.blocks[0].jobs[0].args`" in workreq_duplicate_key(data, req, encoder.encode(req))


# Documents as lists of pairs, so that keys can repeat; written with random spacing and escapes.

def write(value, rng: random.Random) -> str:
    space = lambda: rng.choice(["", "", " ", "\n  "])  # noqa: E731
    if isinstance(value, list) and value == [()]:
        return "{" + space() + "}"
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return "{" + ",".join(f"{space()}{write_str(k, rng)}{space()}:{space()}{write(v, rng)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(write(v, rng) for v in value) + "]"
    if isinstance(value, str):
        return write_str(value, rng)
    return json.dumps(value)


def write_str(text: str, rng: random.Random) -> str:
    return json.dumps(text, ensure_ascii=rng.random() < 0.2)


texts = st.sampled_from(["", "x", "a:b", ":", "::x", "é:", 'q"uote', "back\\slash", "null", "max_failures"]) | st.text(
    alphabet=st.sampled_from("ab: \"\\é"), max_size=6)


@st.composite
def workreq_pairs(draw):
    """A WorkReq as pairs, maybe with a key repeated (any level), maybe with defaults spelled out."""
    def fields(mandatory, optional):
        pairs = list(mandatory)
        for key, strategy in optional:
            if draw(st.booleans()):
                pairs.append((key, draw(strategy)))
        return draw(st.permutations(pairs))

    def job():
        args = draw(st.lists(st.tuples(st.sampled_from(["seconds", "site", "a:b", "desc", "name"]), texts),
                             max_size=3, unique_by=lambda kv: kv[0]))
        return fields([("name", draw(texts))], [("desc", texts), ("args", st.just(args or [()]))])

    def block():
        jobs = [job() for _ in range(draw(st.integers(1, 3)))]
        return fields([("jobs", jobs)], [("desc", texts), ("rate_limit", st.integers(-2, 3))])

    blocks = [block() for _ in range(draw(st.integers(1, 3)))]
    top = fields([("name", "SleepDemo"), ("blocks", blocks)],
                 [("desc", texts), ("max_failures", st.none() | st.integers(0, 3))])
    if draw(st.booleans()):  # repeat one key of one object, with any value of the right type
        objects = [top] + [b for b in blocks] + [j for b in blocks for j in dict(b)["jobs"]]
        objects += [dict(j)["args"] for b in blocks for j in dict(b)["jobs"] if "args" in dict(j)]
        target = draw(st.sampled_from([o for o in objects if o and o != [()]]))
        key, value = draw(st.sampled_from(target))
        target.insert(draw(st.integers(0, len(target))), (key, value))
    return top


@settings(max_examples=400, deadline=None)
@given(workreq_pairs(), st.integers(0, 2**32))
def test_the_count_never_vouches_for_a_document_with_a_repeated_key(doc, seed):
    data = write(doc, random.Random(seed)).encode()
    try:
        req = workreq_decoder.decode(data)
    except msgspec.DecodeError:
        return
    exact = find_duplicate_key(data)
    if provably_unique(data, req, encoder.encode(req)):
        assert exact is None, data
    assert workreq_duplicate_key(data, req, encoder.encode(req), exact_below=0) == exact


# ---------------------------------------------------------------- bounds on numbers


@pytest.mark.parametrize("body, fragment", [
    ('{"name": "X", "blocks": [{"rate_limit": 1%s, "jobs": [%s]}]}' % ("0" * 30, JOB), "<= 10000 - at `$.blocks[0].rate_limit`"),
    ('{"name": "X", "blocks": [{"rate_limit": 10001, "jobs": [%s]}]}' % JOB, "<= 10000 - at `$.blocks[0].rate_limit`"),
    ('{"name": "X", "blocks": [{"rate_limit": -10001, "jobs": [%s]}]}' % JOB, ">= -10000 - at `$.blocks[0].rate_limit`"),
    ('{"name": "X", "blocks": [{"rate_limit": %s, "jobs": [%s]}]}' % ("9" * 400, JOB), "`$.blocks[0].rate_limit`"),
    ('{"name": "X", "max_failures": 1000001, "blocks": [{"jobs": [%s]}]}' % JOB, "<= 1000000 - at `$.max_failures`"),
    ('{"name": "X", "blocks": [{"rate_limit": 1e3, "jobs": [%s]}]}' % JOB, "Expected `int`"),
])
def test_numbers_past_their_bounds_are_refused_naming_the_field(body, fragment):
    with pytest.raises(msgspec.ValidationError) as err:
        workreq_decoder.decode(body.encode())
    assert fragment in str(err.value)


def test_numbers_within_bounds_are_accepted():
    req = workreq_decoder.decode(('{"name": "X", "max_failures": 1000000, "blocks": [{"rate_limit": 10000, "jobs": [%s]},'
                                  '{"rate_limit": -10000, "jobs": [%s]}]}' % (JOB, JOB)).encode())
    assert req.blocks[1].jobs_in_flight_cap == 1 and req.max_failures == 1_000_000


# ---------------------------------------------------------------- policies.json


@pytest.mark.parametrize("text, fragment", [
    ('{"Name": "Open", "Policies": []}', r"entry 1 \(Open\): Policies is empty"),
    ('{"Name": "Open"}', "missing required field `Policies`"),
    ('{"Name": "Open", "Policies": [{"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["sleep"]}}], "Policies": []}',
     "duplicate key 'Policies'"),
])
def test_a_name_without_policies_is_a_configuration_error_not_approve_all(jobs, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_policy_config(text, PolicyRegistry(builtin_policies()), jobs)


def test_config_streams_refuse_repeated_keys():
    assert json_stream('{"a": 1}\n{"a": 2}') == [{"a": 1}, {"a": 2}]
    with pytest.raises(ValueError, match="duplicate key 'Status'"):
        json_stream('{"Name": "A", "Status": "stop", "Status": "go"}')
