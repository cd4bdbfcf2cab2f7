"""Register name: "allowHosts"

Settings:
    "Hosts": the hosts a WorkReq of this name may reach with `ssh`, at least one, each one of:
        an inventory site name, like "aap": the machines at that site, written MACHINE.SITE ("aa07.aap");
        an inventory machine name, like "aa07", or a DNS name, like "db1.prod.example" (equal, case-insensitive);
        a DNS name pattern, like "*.prod.example" (`*` any characters, dots included; `?` one);
        an IP address, like "10.0.0.7" or "fd00::7";
        a CIDR block, like "10.0.0.0/24" or "fd00::/64" (no host bits set).
        For example ["aap", "10.0.0.7", "10.1.0.0/16", "*.prod.example"]
    "Users" (optional): the remote user names a job may log in as, at least one, each a POSIX user
        name (as `ssh` takes them), compared exactly (case-sensitive), like ["deploy", "ops"];
        without it, any user.
    "Ports" (optional): the SSH ports a job may connect to, at least one, each a number from 1 to
        65,535, like [22, 2222]; a job without `port` uses 22. Without it, any port.
    For example {"Hosts": ["aap", "10.0.0.7"], "Users": ["deploy"], "Ports": [22]}; `Users` and
    `Ports` apply to every host listed.

Result:
    Violated by any job that this policy must allow (`ssh`, and any job whose `allowed_by` is
    "allowHosts") whose `host` is allowed by no entry, or (when "Users" / "Ports" are given) whose
    `user` is not one of Users or whose `port` (22 when absent) is not one of Ports. A host is
    allowed when:
    - it is an IP address (compared as an address: "10.0.0.7" and "::ffff:10.0.0.7" are the same
      address) equal to an address entry or within a CIDR entry; a host that looks like an IPv4
      address in another form ("10.0.0.07", "0x0a000007", "167772167") is never allowed;
    - it is a host name equal to an entry or matching a pattern entry (case-insensitive; host names
      are letters, digits, "-" and "_" in dot-separated labels, nothing else);
    - it names a machine of the inventory as MACHINE.SITE, like "aa07.aap" (the name the seed's
      erase client gives it), and SITE is listed in Hosts, in the inventory as it is when the
      WorkReq is decided. A machine name alone ("aa07") is allowed only by an entry of its own:
      the inventory repeats machine names across sites (the sample's aa07 is at 34 of them), so a
      site entry never allows a bare name that might be another site's machine.
    The reason names the block, the job and the host, and lists the entries (or names the user or
    port refused and lists Users or Ports). A job that needs this policy is denied outright when
    its WorkReq name has none (default-deny).
"""

from __future__ import annotations

import ipaddress
import re
import threading
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import msgspec

from schemas import WorkReq
from services.inventory import Inventory, InventoryError, InventorySource
from services.jobs import ArgError, JobRegistry, parse_whole_number
from services.jobs.ssh_cmd import DEFAULT_PORT, parse_user

from ..vocabulary import Check, ConfigError, PolicyViolation, guarded_jobs, guarded_uses, parse_settings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PATTERN_RE = re.compile(r"[a-z0-9_*?.-]+")
# the last label of a name that resolvers read as an IPv4 address (inet_aton: decimal, octal, hex)
_NUMERIC_LABEL_RE = re.compile(r"(?:[0-9]+|0x[0-9a-f]*)", re.IGNORECASE)
SHOWN_MAX = 200

# InventorySource caches without a lock; checks may run in worker threads (decide.py)
_INVENTORY_LOCK = threading.Lock()


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    Hosts: list[str]
    Users: list[str] | msgspec.UnsetType = msgspec.UNSET  # left out: any user
    Ports: list[int] | msgspec.UnsetType = msgspec.UNSET  # left out: any port


def parse_ip(text: str) -> IpAddress | None:
    """An IP address in a standard form (IPv4-mapped IPv6 as its IPv4 address), None otherwise."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def looks_numeric(name: str) -> bool:
    """Whether a resolver could read the name as an IPv4 address (its last label is a number)."""
    return bool(_NUMERIC_LABEL_RE.fullmatch(name.rstrip(".").rsplit(".", 1)[-1]))


@dataclass(frozen=True)
class HostRules:
    names: frozenset[str]  # site, machine or DNS names, lower case
    patterns: tuple[str, ...]
    addresses: frozenset[IpAddress]
    networks: tuple[IpNetwork, ...]

    def allows_ip(self, address: IpAddress) -> bool:
        return address in self.addresses or any(address in net for net in self.networks)

    def allows_name(self, name: str) -> bool:
        return name in self.names or any(fnmatchcase(name, p) for p in self.patterns)

    def allows_machine(self, name: str, inventory: Inventory) -> bool:
        """Whether `name` is MACHINE.SITE, a machine at a listed site."""
        machine, dot, site = name.partition(".")
        return bool(dot) and site in self.names and inventory.has_machine(site, machine)


def _rules(policy: str, hosts: list[str]) -> HostRules:
    names: set[str] = set()
    patterns: list[str] = []
    addresses: set[IpAddress] = set()
    networks: list[IpNetwork] = []
    for n, entry in enumerate(hosts):
        where = f"policy {policy!r}: Hosts[{n}] {entry[:SHOWN_MAX]!r}"
        text = entry.lower()
        if "/" in text:
            try:
                networks.append(ipaddress.ip_network(text, strict=True))
            except ValueError as exc:
                raise ConfigError(f"{where} is not a CIDR block: {exc}") from None
        elif (address := parse_ip(text)) is not None:
            addresses.add(address)
        elif ":" in text or looks_numeric(text):
            raise ConfigError(f"{where} is not an IP address in a standard form")
        elif _HOST_NAME_RE.fullmatch(text):
            names.add(text)
        elif re.fullmatch(r"[0-9.*?]+", text) and any(c.isdigit() for c in text):
            raise ConfigError(f"{where} is a pattern of addresses, which never matches one: use a CIDR block, "
                              "like 10.0.0.0/24")
        elif _PATTERN_RE.fullmatch(text) and ("*" in text or "?" in text) and ".." not in text:
            patterns.append(text)
        else:
            raise ConfigError(f"{where} is not a site, machine or host name, pattern, IP address or CIDR block")
    return HostRules(frozenset(names), tuple(patterns), frozenset(addresses), tuple(networks))


def _users(policy: str, users: list[str] | msgspec.UnsetType) -> frozenset[str] | None:
    if isinstance(users, msgspec.UnsetType):
        return None
    if not users:
        raise ConfigError(f"policy {policy!r}: Users is empty; list at least one user, or leave it out to allow any")
    for n, user in enumerate(users):
        try:
            parse_user(user)
        except ArgError as err:
            raise ConfigError(f"policy {policy!r}: Users[{n}]: {err.message}") from None
    return frozenset(users)


def _ports(policy: str, ports: list[int] | msgspec.UnsetType) -> frozenset[int] | None:
    if isinstance(ports, msgspec.UnsetType):
        return None
    if not ports:
        raise ConfigError(f"policy {policy!r}: Ports is empty; list at least one port, or leave it out to allow any")
    for n, port in enumerate(ports):
        if not 1 <= port <= 65_535:
            raise ConfigError(f"policy {policy!r}: Ports[{n}] must be a port number from 1 to 65,535, got {port}")
    return frozenset(ports)


def _shown(host: str) -> str:
    return repr(host if len(host) <= SHOWN_MAX else host[:SHOWN_MAX] + "...")


class AllowHosts:
    """Built with the inventory source, read when a WorkReq is decided (None: no inventory, so a
    site entry allows no machine)."""

    name = "allowHosts"

    def __init__(self, inventory: InventorySource | None = None) -> None:
        self.inventory = inventory

    def _current(self) -> Inventory:
        if self.inventory is None:
            raise InventoryError("no inventory is configured for this policy")
        with _INVENTORY_LOCK:
            return self.inventory.current()

    def build(self, settings: dict[str, Any], jobs: JobRegistry) -> Check:
        parsed: Settings = parse_settings(self.name, Settings, settings)
        if not parsed.Hosts:
            raise ConfigError(f"policy {self.name!r}: Hosts is empty; list at least one host")
        rules = _rules(self.name, parsed.Hosts)
        listing = ", ".join(parsed.Hosts)
        users = _users(self.name, parsed.Users)
        ports = _ports(self.name, parsed.Ports)
        users_listing = ", ".join(sorted(users or ()))
        ports_listing = ", ".join(str(p) for p in sorted(ports or ()))

        def login_issue(args: dict[str, str]) -> str | None:
            """None when the job's user and port are allowed, else what is not."""
            if users is not None:
                user = args.get("user", "")
                if user not in users:
                    shown = user if len(user) <= 40 else user[:40] + "..."
                    return f"user {shown!r} is not allowed (allowed users: {users_listing})"
            if ports is not None:
                text = args.get("port", str(DEFAULT_PORT))
                try:
                    port = parse_whole_number("port", text, 1, 65_535)
                except ArgError:
                    port = None
                if port not in ports:
                    shown = text if len(text) <= 40 else text[:40] + "..."
                    return f"port {shown!r} is not allowed (allowed ports: {ports_listing})"
            return None
        guarded = guarded_jobs(jobs, self.name)

        def why_not(host: str) -> str | None:
            """None when the host is allowed, else why not."""
            address = parse_ip(host)
            if address is not None:
                return None if rules.allows_ip(address) else "is not allowed"
            name = host.lower()
            if ":" in name or looks_numeric(name):
                return "is not allowed: it is not an IP address in a standard form"
            if not _HOST_NAME_RE.fullmatch(name):
                return "is not allowed: it is not a host name or IP address"
            if rules.allows_name(name):
                return None
            try:
                inventory = self._current()
            except InventoryError as exc:
                return f"is not allowed (the inventory is unusable: {exc})"
            if rules.allows_machine(name, inventory):
                return None
            sites = sorted(site for site in rules.names if inventory.has_machine(site, name))
            if sites:  # a bare machine name: which site's?
                return (f"is not allowed: a machine of a listed site is written MACHINE.SITE, like "
                        f"'{name}.{sites[0]}'")
            return "is not allowed"

        def check(req: WorkReq) -> None:
            for where, job in guarded_uses(req, guarded):
                host = job.args.get("host", "")
                reason = why_not(host)
                if reason is not None:
                    raise PolicyViolation(f"{where}: host {_shown(host)} {reason} (allowed: {listing})")
                issue = login_issue(job.args)
                if issue is not None:
                    raise PolicyViolation(f"{where}: host {_shown(host)}: {issue}")

        return check
