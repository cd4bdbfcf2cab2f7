"""The seed's sample client: the WorkReq that erases every machine of a decommissioned satellite."""

from __future__ import annotations

from typing import Any

from services.inventory import Inventory

WORKREQ_NAME = "SatelliteDiskErase"
BUCKET = "diskEraseSatellite"
MACHINES_PER_BLOCK = 5
SETTLE_S = 60


class EraseRefused(ValueError):
    """The site cannot be erased; the message says why."""


def check_site(inventory: Inventory, site_name: str) -> None:
    site = inventory.site(site_name)
    if site is None:
        raise EraseRefused(f"site {site_name!r} is not in the inventory")
    if site.type != "satellite":
        raise EraseRefused(f"site {site_name!r} is a {site.type}, not a satellite")
    if site.status != "decom":
        raise EraseRefused(f"site {site_name!r} is {site.status}: only a satellite in decom can be erased")
    if not inventory.machines_at(site_name):
        raise EraseRefused(f"site {site_name!r} has no machines")


def erase_satellite_workreq(inventory: Inventory, site_name: str) -> dict[str, Any]:
    """Check pre-conditions (validateDecom, then one token), then the machines in name order, five
    per block at rate 5, each block but the last ending with a 60 s settle."""
    check_site(inventory, site_name)
    machines = inventory.machines_at(site_name)
    blocks: list[dict[str, Any]] = [
        {
            "desc": "Check pre-conditions",
            "rate_limit": 1,
            "jobs": [
                {"name": "validateDecom", "desc": f"{site_name} is a satellite in decom", "args": {"site": site_name, "type": "satellite"}},
                {"name": "tokenBucket", "desc": "one satellite erase per interval", "args": {"bucket": BUCKET, "fatal": "true"}},
            ],
        }
    ]
    chunks = [machines[i : i + MACHINES_PER_BLOCK] for i in range(0, len(machines), MACHINES_PER_BLOCK)]
    for n, chunk in enumerate(chunks):
        jobs = [{"name": "diskErase", "desc": f"erase {m}.{site_name}", "args": {"machine": m, "site": site_name}} for m in chunk]
        if n < len(chunks) - 1:
            jobs.append({"name": "sleep", "desc": "settle before the next block", "args": {"seconds": str(SETTLE_S)}})
        blocks.append({"desc": f"Erase machines {chunk[0]}..{chunk[-1]} at {site_name}", "rate_limit": MACHINES_PER_BLOCK, "jobs": jobs})
    return {"name": WORKREQ_NAME, "desc": f"erase every disk of satellite {site_name}", "blocks": blocks}
