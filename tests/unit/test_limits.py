import json

import pytest

from schemas import workreq_decoder
from services.intake.workreq_limits import Limits, check_limits

SMALL = Limits(max_request_bytes=10_000, max_blocks=3, max_jobs_per_block=4, max_jobs=6, max_args_per_job=2,
               max_arg_key_len=5, max_arg_value_len=8, max_desc_len=10)


def req(blocks=1, jobs=1, args=None, desc="", block_desc="", job_desc=""):
    job = {"name": "sleep", "desc": job_desc, "args": args if args is not None else {"seconds": "1"}}
    body = {"name": "X", "desc": desc, "blocks": [{"desc": block_desc, "jobs": [job] * jobs} for _ in range(blocks)]}
    return workreq_decoder.decode(json.dumps(body).encode())


def test_within_every_limit():
    assert check_limits(req(blocks=3, jobs=2, args={"a": "12345678", "b": "x"}, desc="0123456789"), SMALL) is None


@pytest.mark.parametrize(
    "workreq, message",
    [
        (req(blocks=4), "the number of blocks is 4, over the limit of 3 (WF_MAX_BLOCKS)"),
        (req(blocks=2, jobs=4), "the number of jobs is 8, over the limit of 6 (WF_MAX_JOBS)"),
        (req(jobs=5), "block 0's number of jobs is 5, over the limit of 4 (WF_MAX_JOBS_PER_BLOCK)"),
        (req(args={"a": "1", "b": "2", "c": "3"}), "block 0 job 0's number of args is 3, over the limit of 2 (WF_MAX_ARGS_PER_JOB)"),
        (req(args={"toolong": "1"}), "block 0 job 0's arg key length is 7, over the limit of 5 (WF_MAX_ARG_KEY_LEN)"),
        (req(args={"a": "123456789"}), "block 0 job 0 arg 'a''s value length is 9, over the limit of 8 (WF_MAX_ARG_VALUE_LEN)"),
        (req(desc="x" * 11), "the WorkReq's desc length is 11, over the limit of 10 (WF_MAX_DESC_LEN)"),
        (req(block_desc="x" * 11), "block 0's desc length is 11, over the limit of 10 (WF_MAX_DESC_LEN)"),
        (req(job_desc="x" * 11), "block 0 job 0's desc length is 11, over the limit of 10 (WF_MAX_DESC_LEN)"),
    ],
)
def test_each_limit_is_named_with_where_and_how_to_change_it(workreq, message):
    assert check_limits(workreq, SMALL) == message


def test_limits_come_from_the_environment():
    limits = Limits.from_env({"WF_MAX_BLOCKS": "7", "WF_MAX_REQUEST_BYTES": "100", "UNRELATED": "1"})
    assert (limits.max_blocks, limits.max_request_bytes, limits.max_jobs) == (7, 100, Limits().max_jobs)
