"""The sample inventory: sites and machines, loaded from JSON lines and validated.

It stands in for the database or service that would hold this data. Services get an
`InventorySource` passed in; nothing is global. A source re-reads the files when they change, so a
job that checks the inventory when it runs (validateDecom) sees the current state."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from services.common.configfile import read_text

SITE_TYPES = frozenset({"satellite", "cluster"})
SITE_STATUSES = frozenset({"inService", "decom"})
_SITE_RE = re.compile(r"^[a-z]{3}$")
_MACHINE_RE = re.compile(r"^[a-z]{2}[0-9]{2}$")


class InventoryError(ValueError):
    """The inventory files cannot be used; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Site:
    name: str
    type: str
    status: str


@dataclass(frozen=True)
class Inventory:
    sites: dict[str, Site]
    machines: dict[str, frozenset[str]]  # site name -> machine names

    def site(self, name: str) -> Site | None:
        return self.sites.get(name)

    def has_machine(self, site: str, machine: str) -> bool:
        return machine in self.machines.get(site, frozenset())

    def machines_at(self, site: str) -> list[str]:
        return sorted(self.machines.get(site, frozenset()))


def _rows(path: Path, keys: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    text = read_text(path, InventoryError)
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InventoryError(f"{path}:{n}: not JSON: {exc.msg}") from None
        if not isinstance(row, dict) or set(row) != set(keys) or not all(isinstance(v, str) for v in row.values()):
            raise InventoryError(f"{path}:{n}: expected an object with string fields {', '.join(keys)}, got {line.strip()}")
        rows.append((n, row))
    return rows


def load_inventory(directory: Path) -> Inventory:
    sites_path, machines_path = directory / "sites.json", directory / "machines.json"
    sites: dict[str, Site] = {}
    for n, row in _rows(sites_path, ("Name", "Type", "Status")):
        where = f"{sites_path}:{n}"
        if not _SITE_RE.match(row["Name"]):
            raise InventoryError(f"{where}: site name {row['Name']!r} is not three lowercase letters")
        if row["Type"] not in SITE_TYPES:
            raise InventoryError(f"{where}: site type {row['Type']!r} is not one of {sorted(SITE_TYPES)}")
        if row["Status"] not in SITE_STATUSES:
            raise InventoryError(f"{where}: site status {row['Status']!r} is not one of {sorted(SITE_STATUSES)}")
        if row["Name"] in sites:
            raise InventoryError(f"{where}: site {row['Name']!r} is listed twice")
        sites[row["Name"]] = Site(row["Name"], row["Type"], row["Status"])
    machines: dict[str, set[str]] = {}
    for n, row in _rows(machines_path, ("Name", "Site")):
        where = f"{machines_path}:{n}"
        if not _MACHINE_RE.match(row["Name"]):
            raise InventoryError(f"{where}: machine name {row['Name']!r} is not two letters and two digits")
        if row["Site"] not in sites:
            raise InventoryError(f"{where}: machine {row['Name']!r} is at site {row['Site']!r}, which is not in {sites_path.name}")
        at_site = machines.setdefault(row["Site"], set())
        if row["Name"] in at_site:
            raise InventoryError(f"{where}: machine {row['Name']!r} is listed twice at site {row['Site']!r}")
        at_site.add(row["Name"])
    return Inventory(sites, {site: frozenset(names) for site, names in machines.items()})


class InventorySource:
    """The current inventory of a directory, re-read when its files change."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[tuple[int, int], ...] | None = None
        self._inventory: Inventory | None = None

    def _file_stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for name in ("sites.json", "machines.json"):
            try:
                st = os.stat(self.directory / name)
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((-1, -1))
        return tuple(stamps)

    def current(self) -> Inventory:
        """The inventory as the files are now; raises InventoryError if they became unusable."""
        stamp = self._file_stamp()
        if self._inventory is None or stamp != self._stamp:
            self._inventory = load_inventory(self.directory)
            self._stamp = stamp
        return self._inventory
