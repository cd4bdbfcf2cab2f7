"""Start-up loading shared by the services that need the job registry (policy and jobrunner)."""

from __future__ import annotations

import structlog

from services.buckets import BucketConfigError, BucketStore, load_bucket_configs
from services.inventory import InventoryError, InventorySource
from services.jobs import JobEnv, JobRegistry, load_jobs

from .settings import Settings

log = structlog.get_logger()


def job_registry_or_exit(settings: Settings, bucket_store: BucketStore | None = None) -> JobRegistry:
    """The job registry, with the inventory and buckets it needs; a clear message and exit 2 otherwise."""
    try:
        inventory = InventorySource(settings.inventory_dir)
        inventory.current()  # fail start-up, not the first submit, on a bad inventory
        buckets = load_bucket_configs(settings.config_dir / "buckets.json")
        return load_jobs(JobEnv(inventory=inventory, buckets=buckets, bucket_store=bucket_store))
    except (InventoryError, BucketConfigError, ValueError) as exc:
        log.error("startup_failed", error=str(exc))
        raise SystemExit(2) from None
