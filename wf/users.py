"""People: one personal credential each, added and removed while the system runs.

Everything lives under the data dir, owned by whoever runs `wf up` (whoever can read it is an admin):

- `auth/users.json`: the registry, `{NAME: {"role", "hash", "created", "by"}}`. It holds bcrypt hashes,
  never a password.
- `users/NAME.env` (mode 0600): the person's `WF_NATS_URL=nats://NAME:PASSWORD@HOST:PORT`, the only
  place their password is written. Hand it to that person and to nobody else.
- `auth/service-users.json`: this run's service, admin and views users as nats-server sees them
  (bcrypt hashes and permissions), written by `wf up`; `auth/wf-users.conf` and
  `auth/people-users.conf`: the users lists of the two accounts, included by `nats-server.conf` and
  regenerated from those two files on every change.

A change is applied with the server's configuration reload (SIGHUP to the pid in
`nats-server.pid`): nats-server keeps every connection whose user is unchanged, so running work goes
on, and closes the connections of a user that is gone. The password is 32 random bytes: bcrypt's
cost adds nothing to a secret nobody can guess (wf/auth.py `hash_password`).
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import re
import secrets
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from . import auth

PERSON_ROLES = ("client", "operator", "admin")
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # whole names only (fullmatch)
RESERVED = frozenset(auth.ROLES) - {"client", "operator"}  # the services', the shared admin's, views


def reserved(name: str) -> bool:
    """Names that would read as the system's own in a record (`admin`, `wf-executor`, `unknown:...`),
    in any case."""
    lowered = name.lower()
    return lowered in RESERVED or lowered.startswith(("wf-", "unknown"))
FIRST_PEOPLE = {"client": "client", "operator": "operator"}  # client.env and operator.env
DEFAULT_HOST_PORT = "127.0.0.1:4222"


class UserError(Exception):
    """A refusal worth one line at the CLI (bad name, exists, unknown)."""


@dataclass(frozen=True)
class Paths:
    data_dir: Path

    @property
    def registry(self) -> Path:
        return self.data_dir / "auth" / "users.json"

    @property
    def lock(self) -> Path:
        return self.data_dir / "auth" / "users.lock"

    @property
    def service_users(self) -> Path:
        return self.data_dir / "auth" / "service-users.json"

    @property
    def wf_conf(self) -> Path:
        return self.data_dir / "auth" / "wf-users.conf"

    @property
    def people_conf(self) -> Path:
        return self.data_dir / "auth" / "people-users.conf"

    @property
    def server(self) -> Path:
        """Where the running server listens: `{"url": "nats://127.0.0.1:4222"}` (written by `wf up`)."""
        return self.data_dir / "auth" / "server.json"

    @property
    def pid(self) -> Path:
        return self.data_dir / "nats-server.pid"

    def env(self, name: str) -> Path:
        return self.data_dir / "users" / f"{name}.env"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise UserError(f"user name {name!r} must be 1-64 letters, digits, '-' or '_'")
    if reserved(name):
        raise UserError(f"user name {name!r} is reserved for the system ({', '.join(sorted(RESERVED))}, wf-*, unknown*)")


@contextmanager
def locked(paths: Paths) -> Iterator[None]:
    """One change to the registry at a time (two `wf user add` at once, or with `wf up`)."""
    paths.lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(paths.lock, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load(paths: Paths) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(paths.registry.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise UserError(f"{paths.registry} is not valid JSON ({exc}); restore it or remove it to start afresh") from None
    return {str(k): dict(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save(paths: Paths, registry: dict[str, dict[str, str]]) -> None:
    write_private(paths.registry, json.dumps(registry, indent=1, sort_keys=True) + "\n")


def server_url(paths: Paths) -> str:
    """The running (or last) embedded server's URL without credentials."""
    try:
        return str(json.loads(paths.server.read_text())["url"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return f"nats://{DEFAULT_HOST_PORT}"


def person_url(base: str, name: str, password: str) -> str:
    parts = urlsplit(base)
    return f"{parts.scheme}://{quote(name, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"


def write_env(paths: Paths, name: str, url: str) -> Path:
    path = paths.env(name)
    write_private(path, f"WF_NATS_URL={url}\n")
    return path


def read_env_url(path: Path) -> str | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("WF_NATS_URL="):
                return line.removeprefix("WF_NATS_URL=").strip()
    except FileNotFoundError:
        return None
    return None


def _permissions_entry(name: str, password_hash: str, role: str) -> dict[str, object]:
    return auth.user_entry(name, password_hash, auth.ROLES[role])


def render(paths: Paths) -> None:
    """The two accounts' users lists, from this run's system users and the registry."""
    try:
        system = json.loads(paths.service_users.read_text())
    except FileNotFoundError:
        system = {auth.WF_ACCOUNT: [], auth.PEOPLE_ACCOUNT: []}
    registry = load(paths)
    wf_users = list(system.get(auth.WF_ACCOUNT, []))
    people_users = list(system.get(auth.PEOPLE_ACCOUNT, []))
    for name, record in sorted(registry.items()):
        entry = _permissions_entry(name, record["hash"], record["role"])
        (wf_users if auth.ROLES[record["role"]].account == auth.WF_ACCOUNT else people_users).append(entry)
    write_private(paths.wf_conf, "users: " + json.dumps(wf_users, indent=1) + "\n")
    write_private(paths.people_conf, "users: " + json.dumps(people_users, indent=1) + "\n")


def _server_pid(paths: Paths) -> int | None:
    """The pid of the nats-server running this data dir's configuration (a stale pid file, now
    another process's, is ignored)."""
    try:
        pid = int(paths.pid.read_text().strip())
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    conf = str(paths.data_dir / "nats-server.conf").encode()
    return pid if exe.startswith("nats-server") and conf in argv else None


def reload_server(paths: Paths) -> bool:
    """Ask the running server to reload its configuration; False when none runs (the change then
    applies at the next `wf up`)."""
    pid = _server_pid(paths)
    if pid is None:
        return False
    os.kill(pid, signal.SIGHUP)
    return True


def issue(paths: Paths, registry: dict[str, dict[str, str]], name: str, role: str, by: str) -> Path:
    """A new password for `name` (created or replaced) and its env file."""
    password = secrets.token_urlsafe(32)
    registry[name] = {"role": role, "hash": auth.hash_password(password),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "by": by}
    return write_env(paths, name, person_url(server_url(paths), name, password))


def add(paths: Paths, name: str, role: str) -> tuple[Path, bool]:
    """(the person's env file, whether the running server took the change)."""
    check_name(name)
    if role not in PERSON_ROLES:
        raise UserError(f"role {role!r} is not one of {', '.join(PERSON_ROLES)}")
    with locked(paths):
        registry = load(paths)
        if name in registry:
            raise UserError(f"user {name!r} exists (role {registry[name]['role']}); `wf user rm {name}` first to re-issue")
        env = issue(paths, registry, name, role, by=current_login())
        save(paths, registry)
        render(paths)
        return env, reload_server(paths)


def remove(paths: Paths, name: str) -> bool:
    """Whether the running server took the change (the person's connections are closed by it)."""
    with locked(paths):
        registry = load(paths)
        if name not in registry:
            raise UserError(f"no user {name!r} (`wf user ls` lists them)")
        del registry[name]
        save(paths, registry)
        paths.env(name).unlink(missing_ok=True)
        render(paths)
        return reload_server(paths)


def current_login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def ensure_first_people(paths: Paths, base_url: str) -> dict[str, str]:
    """At `wf up`: the first client and operator, and a personal operator credential for whoever
    runs it, exist with a usable env file (issued if missing); every person's env file points at
    this run's server. Returns {name: url} of the first people. Call it under `locked(paths)`."""
    write_private(paths.server, json.dumps({"url": base_url}) + "\n")
    fresh = not paths.registry.exists()
    registry = load(paths)
    firsts = dict(FIRST_PEOPLE)
    login = current_login()
    if fresh and NAME_RE.fullmatch(login) and not reserved(login) and login not in firsts:
        firsts[login] = "operator"  # once, on the first start: removing it lasts
    for name, role in firsts.items():
        if name not in registry or read_env_url(paths.env(name)) is None:
            issue(paths, registry, name, registry.get(name, {}).get("role", role), by="wf up")
    for name in registry:
        _point_at(paths, name, base_url)
    save(paths, registry)
    return {name: read_env_url(paths.env(name)) or "" for name in FIRST_PEOPLE}


def _point_at(paths: Paths, name: str, base_url: str) -> None:
    """Rewrite a person's env file for this run's host, port and scheme (the password stays)."""
    url = read_env_url(paths.env(name))
    if url is None:
        return
    parts, base = urlsplit(url), urlsplit(base_url)
    if (parts.scheme, parts.hostname, parts.port) == (base.scheme, base.hostname, base.port):
        return
    write_env(paths, name, f"{base.scheme}://{parts.username}:{parts.password}@{base.hostname}:{base.port}")


def listing(paths: Paths) -> list[dict[str, str]]:
    return [{"name": name, "role": record["role"], "created": record.get("created", ""), "by": record.get("by", ""),
             "env": str(paths.env(name)) if paths.env(name).exists() else ""}
            for name, record in sorted(load(paths).items())]


# ---------------------------------------------------------------- roles in KV `wf_people`


def roles(paths: Paths) -> dict[str, str]:
    """name -> role, from the registry (the source of truth)."""
    return {name: record.get("role", "client") for name, record in load(paths).items()}


async def sync_roles(js, people: dict[str, str]) -> None:
    """Make KV `wf_people` (who may approve what: services/policy/approvals.py) say exactly `people`."""
    import nats.js.errors

    from services.common.topology import PEOPLE_BUCKET

    kv = await js.key_value(PEOPLE_BUCKET)
    try:
        stored = set(await kv.keys())
    except nats.js.errors.NoKeysError:
        stored = set()
    for name, role in sorted(people.items()):
        try:
            current = (await kv.get(name)).value
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            current = None
        if current != role.encode():
            await kv.put(name, role.encode())
    for name in sorted(stored - set(people)):
        await kv.delete(name)


async def push_roles(paths: Paths) -> bool:
    """After `wf user add/rm`: the registry's roles into the running system's `wf_people`, with the
    admin's credential (`<data-dir>/admin.env`); False when no system runs here (`wf up` syncs at start)."""
    import asyncio

    import nats
    import nats.errors

    url = read_env_url(paths.data_dir / "admin.env")
    if url is None:
        return False
    try:
        nc = await asyncio.wait_for(nats.connect(url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0,
                                                 error_cb=quiet, tls=tls_for(url)), 5)
    except (nats.errors.Error, OSError, TimeoutError):
        return False
    try:
        await asyncio.wait_for(sync_roles(nc.jetstream(), roles(paths)), 10)
        return True
    except (nats.errors.Error, OSError, TimeoutError):
        return False
    finally:
        await nc.close()


async def quiet(exc: Exception) -> None:
    """An error_cb that drops nats-py's errors (the caller reports the outcome)."""
    return None


def tls_for(url: str):
    """TLS for a `tls://` URL (trusting WF_NATS_CA), none otherwise."""
    from services.common.bus import tls_context
    from wf import settings

    return tls_context(settings.nats_ca()) if url.startswith("tls://") else None
