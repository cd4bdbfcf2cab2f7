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


@dataclass(frozen=True, kw_only=True)
class Settings:
    nats_url: str = DEFAULT_NATS_URL
    config_dir: Path = REPO_ROOT / "configs"
    inventory_dir: Path = REPO_ROOT / "data"
    time_scale: float = 1.0
    verdict_wait_s: float = 2.0
    exec_window_s: float = 3600.0
    max_in_flight: int = 10
    runner_concurrency: int = 256
    max_deliveries: int = 5
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        return cls(
            nats_url=env.get("WF_NATS_URL", DEFAULT_NATS_URL),
            config_dir=Path(env.get("WF_CONFIG_DIR", str(REPO_ROOT / "configs"))),
            inventory_dir=Path(env.get("WF_INVENTORY_DIR", str(REPO_ROOT / "data"))),
            time_scale=float(env.get("WF_TIME_SCALE", "1")),
            verdict_wait_s=float(env.get("WF_VERDICT_WAIT_S", "2")),
            exec_window_s=float(env.get("WF_EXEC_WINDOW_S", "3600")),
            max_in_flight=int(env.get("WF_MAX_IN_FLIGHT", "10")),
            runner_concurrency=int(env.get("WF_RUNNER_CONCURRENCY", "256")),
            max_deliveries=int(env.get("WF_MAX_DELIVERIES", "5")),
            log_level=env.get("WF_LOG_LEVEL", "info"),
        )
