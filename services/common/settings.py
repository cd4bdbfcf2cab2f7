"""Settings every service reads from its environment: the only place a service reads a WF_* setting
(names and meanings: docs/architecture.md, "Settings"; the runner's job settings and secrets:
docs/jobs.md). `Settings.from_env()` is called once, by `lifecycle.run_service`, and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
try:
    VERSION = metadata.version("wf-service")  # what every micro service reports in $SRV.INFO
except metadata.PackageNotFoundError:
    VERSION = "0.0.0"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Requests in flight per endpoint and instance: all callers together, and one caller (a person, as
# the server authenticated them: services/common/identity.py). One caller may hold a quarter of
# the whole unless WF_MAX_IN_FLIGHT_PER_CALLER says otherwise, so one client's burst leaves three
# quarters to everyone else.
MAX_IN_FLIGHT = 40
PER_CALLER_SHARE = 4


def max_in_flight_per_caller(max_in_flight: int, env: Mapping[str, str]) -> int:
    """WF_MAX_IN_FLIGHT_PER_CALLER, else a quarter of `max_in_flight` (at least 1)."""
    explicit = env.get("WF_MAX_IN_FLIGHT_PER_CALLER", "")
    return max(1, int(explicit)) if explicit else max(1, max_in_flight // PER_CALLER_SHARE)


def max_jobs_in_flight_per_workflow(runner_concurrency: int, runners: int, env: Mapping[str, str]) -> int:
    """WF_MAX_JOBS_IN_FLIGHT_PER_WORKFLOW, else half the runners' slots (WF_RUNNERS x
    WF_RUNNER_CONCURRENCY / 2, at least 1): a workflow never has more jobs dispatched and not ended,
    so one started later always finds runner slots free (executor/progress.py)."""
    explicit = env.get("WF_MAX_JOBS_IN_FLIGHT_PER_WORKFLOW", "")
    return max(1, int(explicit)) if explicit else max(1, runners * runner_concurrency // 2)


# Limits on one submission (wf-intake: services/intake/workreq_limits.py, which holds their defaults):
# WF_MAX_BLOCKS=50 and so on, each limit's name in capitals after `WF_`.
SUBMIT_LIMITS = ("max_request_bytes", "max_blocks", "max_jobs_per_block", "max_jobs", "max_args_per_job",
                 "max_arg_key_len", "max_arg_value_len", "max_desc_len")

# The runner's settings for the built-in jobs (docs/jobs.md), handed to them through JobEnv.settings,
# plugins included: none of them a credential.
JOB_SETTINGS = ("WF_EXEC_USER", "WF_SSH_KEY", "WF_SSH_KNOWN_HOSTS", "WF_HTTP_CA_FILE")
# The runner's secrets (services/jobs/output.py: Secrets), read by nothing else.
SECRETS_FILE_SETTING, SECRET_SETTING_PREFIX = "WF_SECRETS_FILE", "WF_SECRET_"


@dataclass(frozen=True, kw_only=True)
class Settings:
    nats_url: str = field(default=DEFAULT_NATS_URL, repr=False)  # (with the role's password)
    config_dir: Path = REPO_ROOT / "configs"
    inventory_dir: Path = REPO_ROOT / "data"
    time_scale: float = 1.0
    verdict_wait_s: float = 2.0
    exec_window_s: float = 3600.0
    max_in_flight: int = MAX_IN_FLIGHT
    max_in_flight_per_caller: int = MAX_IN_FLIGHT // PER_CALLER_SHARE
    runner_concurrency: int = 256
    runners: int = 1  # job runner processes in all (`wf up` sets WF_RUNNERS to the number it starts)
    max_jobs_in_flight_per_workflow: int = 128
    max_deliveries: int = 5
    log_level: str = "info"
    nats_ca: str = ""  # WF_NATS_CA: a CA file (or the server's own certificate) to trust over TLS
    service_id_file: str = ""  # WF_SERVICE_ID_FILE: where start_micro writes the instance's id
    # JOB_SETTINGS as set (read here once, before the runner scrubs its environment)
    job_settings: Mapping[str, str] = field(default_factory=dict)
    # WF_SECRETS_FILE and every WF_SECRET_<NAME>: for the runner's Secrets only
    secret_settings: Mapping[str, str] = field(default_factory=dict, repr=False)
    # those of SUBMIT_LIMITS the environment sets, as written (wf-intake parses them: a bad one stops
    # wf-intake, not every service)
    submit_limits: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        max_in_flight = int(env.get("WF_MAX_IN_FLIGHT", str(MAX_IN_FLIGHT)))
        runner_concurrency = int(env.get("WF_RUNNER_CONCURRENCY", "256"))
        runners = max(1, int(env.get("WF_RUNNERS", "1")))
        return cls(
            nats_url=env.get("WF_NATS_URL", DEFAULT_NATS_URL),
            config_dir=Path(env.get("WF_CONFIG_DIR", str(REPO_ROOT / "configs"))),
            inventory_dir=Path(env.get("WF_INVENTORY_DIR", str(REPO_ROOT / "data"))),
            time_scale=float(env.get("WF_TIME_SCALE", "1")),
            verdict_wait_s=float(env.get("WF_VERDICT_WAIT_S", "2")),
            exec_window_s=float(env.get("WF_EXEC_WINDOW_S", "3600")),
            max_in_flight=max_in_flight,
            max_in_flight_per_caller=max_in_flight_per_caller(max_in_flight, env),
            runner_concurrency=runner_concurrency,
            runners=runners,
            max_jobs_in_flight_per_workflow=max_jobs_in_flight_per_workflow(runner_concurrency, runners, env),
            max_deliveries=int(env.get("WF_MAX_DELIVERIES", "5")),
            log_level=env.get("WF_LOG_LEVEL", "info"),
            nats_ca=env.get("WF_NATS_CA", ""),
            service_id_file=env.get("WF_SERVICE_ID_FILE", ""),
            job_settings={name: env[name] for name in JOB_SETTINGS if name in env},
            secret_settings={name: value for name, value in env.items()
                             if name == SECRETS_FILE_SETTING or name.startswith(SECRET_SETTING_PREFIX)},
            submit_limits={name: env[f"WF_{name.upper()}"] for name in SUBMIT_LIMITS if f"WF_{name.upper()}" in env},
        )
