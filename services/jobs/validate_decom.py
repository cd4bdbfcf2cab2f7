"""Register name: "validateDecom"

Args:
    "site"(mandatory): the name of the site, like "aap"
    "type"(mandatory): the site's type, "satellite" or "cluster"
    At submit, the site must be in the inventory, be of that type and be in "decom".

Result:
    Checks, when it runs, that the site is still in the inventory and still in "decom". If not,
    it fails fatally: the rest of its Block is cancelled and no later Block starts.

Gate: yes (`gate = True`). Any failure of it (an unusable inventory, a crash, a timeout, a
failure the runner reports for it) ends the workflow the same way, and nothing after it in its
Block is dispatched until it has completed.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.inventory import SITE_TYPES, InventoryError, InventorySource

from . import ArgError, JobContext, JobError, inventory_or_arg_error


class ValidateDecomJob:
    name = "validateDecom"
    gate = True
    mandatory_args = frozenset({"site", "type"})
    optional_args: frozenset[str] = frozenset()

    def __init__(self, inventory: InventorySource) -> None:
        self.inventory = inventory

    def validate(self, args: Mapping[str, str]) -> None:
        if args["type"] not in SITE_TYPES:
            raise ArgError("type", f"type {args['type']!r} is not one of {sorted(SITE_TYPES)}")
        site = inventory_or_arg_error(self.inventory, "site").site(args["site"])
        if site is None:
            raise ArgError("site", f"site {args['site']!r} is not in the inventory")
        if site.type != args["type"]:
            raise ArgError("type", f"site {args['site']!r} is a {site.type}, not a {args['type']}")
        if site.status != "decom":
            raise ArgError("site", f"site {args['site']!r} is {site.status}, not decom")

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None:
        try:
            site = self.inventory.current().site(args["site"])
        except InventoryError as exc:
            raise JobError(f"the inventory is unusable: {exc}", fatal=True) from None
        if site is None:
            raise JobError(f"site {args['site']!r} is no longer in the inventory", fatal=True)
        if site.status != "decom":
            raise JobError(f"site {args['site']!r} is {site.status}, no longer decom", fatal=True)
