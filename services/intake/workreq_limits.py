"""Limits on what one submitted WorkReq may ask for, checked at submit (pure: unit tests call it directly).

Each limit is configurable through the environment (`WF_MAX_BLOCKS` and so on, read by
services/common/settings.py into `Settings.submit_limits`); the defaults here fit the 50,000-job
workflows of the benchmark with room to spare. A WorkReq above the server's max payload comes in parts
(`wf.api.upload`), so its size limit is its own, not the server's."""

from __future__ import annotations

from dataclasses import dataclass

from schemas import WorkReq
from services.common.settings import Settings


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_request_bytes: int = 64 * 1024 * 1024  # over it: 413 (above the max payload, it comes in parts)
    max_blocks: int = 1_000
    max_jobs_per_block: int = 10_000
    max_jobs: int = 100_000
    max_args_per_job: int = 32
    max_arg_key_len: int = 64
    max_arg_value_len: int = 1_024
    max_desc_len: int = 1_024  # the WorkReq's, each block's and each job's

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The defaults, but for those the environment set (`Settings.submit_limits`)."""
        return cls(**{name: int(value) for name, value in settings.submit_limits.items()})

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Limits:
        """`WF_MAX_BLOCKS=50` and so on in `env` (read as `Settings.from_env` reads it)."""
        return cls.from_settings(Settings.from_env(env))


def _over(what: str, size: int, limit: int, setting: str) -> str:
    return f"{what} is {size}, over the limit of {limit} (WF_{setting.upper()})"


def check_limits(req: WorkReq, limits: Limits) -> str | None:
    """The first limit the WorkReq exceeds, said plainly with where it is; None within all limits."""
    if len(req.blocks) > limits.max_blocks:
        return _over("the number of blocks", len(req.blocks), limits.max_blocks, "max_blocks")
    total = sum(len(block.jobs) for block in req.blocks)
    if total > limits.max_jobs:
        return _over("the number of jobs", total, limits.max_jobs, "max_jobs")
    if len(req.desc) > limits.max_desc_len:
        return _over("the WorkReq's desc length", len(req.desc), limits.max_desc_len, "max_desc_len")
    for b, block in enumerate(req.blocks):
        if len(block.jobs) > limits.max_jobs_per_block:
            return _over(f"block {b}'s number of jobs", len(block.jobs), limits.max_jobs_per_block, "max_jobs_per_block")
        if len(block.desc) > limits.max_desc_len:
            return _over(f"block {b}'s desc length", len(block.desc), limits.max_desc_len, "max_desc_len")
        for j, job in enumerate(block.jobs):
            where = f"block {b} job {j}"
            if len(job.desc) > limits.max_desc_len:
                return _over(f"{where}'s desc length", len(job.desc), limits.max_desc_len, "max_desc_len")
            if len(job.args) > limits.max_args_per_job:
                return _over(f"{where}'s number of args", len(job.args), limits.max_args_per_job, "max_args_per_job")
            for key, value in job.args.items():
                if len(key) > limits.max_arg_key_len:
                    return _over(f"{where}'s arg key length", len(key), limits.max_arg_key_len, "max_arg_key_len")
                if len(value) > limits.max_arg_value_len:
                    return _over(f"{where} arg {key[:64]!r}'s value length", len(value), limits.max_arg_value_len, "max_arg_value_len")
    return None
