"""Settings every service reads from its environment (names in docs/architecture.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


def max_in_flight_per_caller(max_in_flight: int, env: dict[str, str] | None = None) -> int:
    """WF_MAX_IN_FLIGHT_PER_CALLER, else a quarter of `max_in_flight` (at least 1)."""
    env = os.environ if env is None else env
    explicit = env.get("WF_MAX_IN_FLIGHT_PER_CALLER", "")
    return max(1, int(explicit)) if explicit else max(1, max_in_flight // PER_CALLER_SHARE)


def max_jobs_in_flight_per_workflow(runner_concurrency: int, runners: int, env: dict[str, str] | None = None) -> int:
    """WF_MAX_JOBS_IN_FLIGHT_PER_WORKFLOW, else half the runners' slots (WF_RUNNERS x
    WF_RUNNER_CONCURRENCY / 2, at least 1): a workflow never has more jobs dispatched and not ended,
    so one started later always finds runner slots free (executor/progress.py)."""
    env = os.environ if env is None else env
    explicit = env.get("WF_MAX_JOBS_IN_FLIGHT_PER_WORKFLOW", "")
    return max(1, int(explicit)) if explicit else max(1, runners * runner_concurrency // 2)


@dataclass(frozen=True, kw_only=True)
class Settings:
    nats_url: str = DEFAULT_NATS_URL
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
        )
