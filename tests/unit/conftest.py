from pathlib import Path

import pytest

from services.buckets import load_bucket_configs
from services.inventory import InventorySource
from services.jobs import JobEnv, JobRegistry, builtin_jobs
from services.policy.registry import PolicyRegistry, builtin_policies

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def job_env() -> JobEnv:
    return JobEnv(inventory=InventorySource(REPO / "data"), buckets=load_bucket_configs(REPO / "configs" / "buckets.json"))


@pytest.fixture
def jobs(job_env: JobEnv) -> JobRegistry:
    return JobRegistry(builtin_jobs(job_env))


@pytest.fixture
def policies() -> PolicyRegistry:
    return PolicyRegistry(builtin_policies())


@pytest.fixture
def jobs_registry_and_config(jobs):
    from services.policy.registry import load_policy_config

    return jobs, load_policy_config(REPO / "configs" / "policies.json", PolicyRegistry(builtin_policies()), jobs)
