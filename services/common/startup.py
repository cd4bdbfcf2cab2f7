"""Start-up loading shared by the services that need the job registry (policy, jobrunner, and the
executor, which tells gates apart with it)."""

from __future__ import annotations

import structlog

from services.buckets import BucketConfigError, BucketStore, load_bucket_configs
from services.inventory import InventoryError, InventorySource
from services.jobs import JobEnv, JobRegistry, load_jobs

from .settings import Settings

log = structlog.get_logger()


def job_registry_or_exit(
    settings: Settings, bucket_store: BucketStore | None = None, *, check_inventory: bool = True
) -> JobRegistry:
    """The job registry, with the inventory and buckets it needs; a clear message and exit 2 otherwise.
    `check_inventory=False` for a service that never validates or runs a job (the executor)."""
    try:
        inventory = InventorySource(settings.inventory_dir)
        if check_inventory:
            inventory.current()  # fail start-up, not the first submit, on a bad inventory
        buckets = load_bucket_configs(settings.config_dir / "buckets.json")
        return load_jobs(JobEnv(inventory=inventory, buckets=buckets, bucket_store=bucket_store))
    except (InventoryError, BucketConfigError, ValueError) as exc:
        log.error("startup_failed", error=str(exc))
        raise SystemExit(2) from None
