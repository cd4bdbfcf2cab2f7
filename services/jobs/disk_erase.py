"""Register name: "diskErase"

Args:
    "machine"(mandatory): the name of the machine, like "aa01" or "ab02"
    "site"(mandatory): the name of the site, like "aaa" or "aap"
    The site must be in the inventory and the machine must be at that site.

Result:
    Erases a disk on a machine. This is a demo: it sleeps 30 seconds (times `--time-scale`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from services.inventory import InventorySource

from . import ArgError, JobContext, inventory_or_arg_error

ERASE_S = 30.0


class DiskEraseJob:
    name = "diskErase"
    mandatory_args = frozenset({"machine", "site"})
    optional_args: frozenset[str] = frozenset()

    def __init__(self, inventory: InventorySource) -> None:
        self.inventory = inventory

    def validate(self, args: Mapping[str, str]) -> None:
        inventory = inventory_or_arg_error(self.inventory, "site")
        if inventory.site(args["site"]) is None:
            raise ArgError("site", f"site {args['site']!r} is not in the inventory")
        if not inventory.has_machine(args["site"], args["machine"]):
            raise ArgError("machine", f"machine {args['machine']!r} is not at site {args['site']!r}")

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None:
        ctx.log.info("disk_erase", machine=args["machine"], site=args["site"])
        await asyncio.sleep(ERASE_S * ctx.time_scale)
