"""Register name: "exec"

Runs one program on the runner's host, never through a shell. Default-deny: a WorkReq using it is
rejected unless its name's policies include `allowCommands`, which lists the programs and argument
patterns allowed (and, in its optional `Env` list, the environment names a job may set).

Args:
    "argv"(mandatory): the program and its arguments, a JSON list of 1 to 256 strings in a string,
        the first the program's absolute path, like "[\\"/usr/bin/systemctl\\", \\"restart\\", \\"nginx\\"]".
        Nothing is split, expanded or interpreted (no shell, no PATH look-up, no globbing).
        An element (not the program) may be exactly "secret:NAME": the runner puts that secret's
        value there (from its secrets file or WF_SECRET_NAME); the WorkReq holds only the name.
    "timeout"(optional): whole seconds the program may run, from 1 to 86,400, like "300"
        (default "60"). Real seconds: `--time-scale` does not apply to a real program.
    "ok_codes"(optional): the exit codes that count as success, comma-separated, each from 0 to 255,
        like "0,3" (default "0").
    "cwd"(optional): the absolute path of the directory to run in, like "/srv/app"
        (default: the runner's own).
    "env"(optional): environment variables to set, a JSON object of NAME -> value in a string,
        like "{\\"DEPLOY_ENV\\": \\"prod\\", \\"TOKEN\\": \\"secret:deploy_token\\"}". Names are
        [A-Z_][A-Z0-9_]*, at most 64 of them; the allowCommands policy says which names are allowed.
        A value may be "secret:NAME" as in argv.
    "attempts"(optional): how many times the program may be started in all, from 1 to 10
        (default "1"): see Retries.
    "fatal"(optional): "true" or "false" (default "false"): whether a failure for good is fatal,
        cancelling the rest of its block and every later block.

Result:
    Starts the program in its own session and process group, stdin empty, as the runner's
    WF_EXEC_USER when set (see Runner configuration), with an environment that is NOT the runner's
    (which holds its NATS credentials and secrets): exactly PATH=/usr/local/bin:/usr/bin:/bin,
    LANG=C.UTF-8, the job's `env` (which may override those two) and WF_EXEC_ID, a marker unique to
    this run (`<workflow>.<block>.<job>.<attempt>-<16 hex digits>`; a job's own WF_EXEC_ID is
    replaced) by which the runner finds what the program started. Nothing else: no HOME, no USER.
    Completes when the program exits with one of `ok_codes`: its exit is what counts, not its
    pipes (a child still holding its stdout does not hold the job). When the program exits, what
    is left of the run gets 1 s more to finish writing, then is terminated (SIGTERM, SIGKILL 2 s
    later) and its output no longer read: nothing it started outlives the job. What is left of
    the run: the program's process group and session, and every process started since the program
    was whose environment still carries its WF_EXEC_ID: a child that called setsid (setsid(1), a
    daemon's double fork) included. Limits: a process that both leaves the session and replaces
    its environment (`setsid env -i ...`), or one the program has another service start for it
    (systemctl start, at, a container runtime), is not found and may outlive the job (running the
    runner in a cgroup of its own, like a systemd unit with KillMode=control-group, bounds that to
    the runner's life); a process that changes to another user (a setuid program) cannot be
    signalled by a runner that is not root.
    Fails (not retried) when it exits with another code ("exited with code 3: <its last line of
    output>"), is killed by a signal ("killed by signal SIGSEGV"), cannot be started (program not
    found or not executable, cwd missing, WF_EXEC_USER unknown or the runner unable to switch to
    it) or names a secret the runner does not have.
    Fails after `timeout` seconds ("timed out after 60 s"): the whole run gets SIGTERM, then
    SIGKILL 2 s later if anything is left.
    A cancel or emergency stop kills the whole run at once (SIGKILL), grandchildren and setsid
    children included, and the job fails with the reason.

Runner configuration:
    WF_EXEC_USER: the OS user (a name or a numeric uid) every program runs as: its uid, its primary
        group and its supplementary groups (HOME and the rest of the environment are not changed:
        see Result). Set it, to an unprivileged user that owns nothing of the runner's: otherwise
        programs run as the runner's own user, and can read its environment (/proc/<runner>/environ:
        its NATS credential, WF_SECRET_* values), its SSH key and secrets file, and signal it (kill
        it: the commands it was running are redelivered). Switching needs a root runner (or
        CAP_SETUID and CAP_SETGID); when it cannot, or the user is unknown, every exec job fails
        saying so, not retried. A root runner without it logs `exec_runs_as_root` at start.
        Without `cwd`, the program starts in the runner's own directory, which that user may be
        unable to read: give `cwd` (or start the runner in a directory it may read).
    Finding what a run left costs one pass over /proc (each process's stat; the environment only
    of processes started since the run began) when the program exits, and a few more while it is
    being terminated: exec jobs only, no other job pays it.

Retries:
    Only a timeout is retried, and only when `attempts` is above 1, waiting 1 s, 2 s, 4 s, ...
    between attempts (the program is started afresh each time). A command is not known to be safe
    to repeat, so the default is one attempt: set `attempts` only for idempotent commands (a
    status query, a restart, `systemctl start` of a unit), never for ones whose effect adds up
    (an append, a counter, a payment). A non-zero exit is never retried: the program answered.

Output:
    stdout and stderr, interleaved as they arrive, as bytes (invalid UTF-8 shown as U+FFFD):
    the last 4 KiB in the job's terminal event and its StatusResp entry (`output`), the last
    256 KiB with `wf logs ID BLOCK JOB`; more is dropped from the front. Every secret value the
    runner knows is shown as [secret:NAME]. The runner's log records the program (argv[0]), its
    exit code and duration, never the other arguments nor env values.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import pwd
import re
import secrets
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ArgError, JobContext, JobError, parse_fatal, parse_whole_number
from .output import Output, SecretError, secret_name

MAX_ARGV = 256
MAX_ARG_LEN = 4096
MAX_TIMEOUT_S = 86_400
DEFAULT_TIMEOUT_S = 60
MAX_ATTEMPTS = 10
MAX_ENV = 64
MAX_ENV_NAME_LEN = 128
ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]*")
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
TERM_GRACE_S = 2.0  # after SIGTERM (timeout) before SIGKILL
LINGER_S = 1.0  # after the program exits, for what it left running to finish writing
LAST_LINE_CHARS = 300
EXEC_USER_ENV = "WF_EXEC_USER"  # the runner's setting: the OS user every program runs as
MARKER_ENV = "WF_EXEC_ID"  # in each program's environment: finds what it started, even after setsid
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_argv(text: str) -> list[str]:
    """`argv` as given: a JSON list of 1 to 256 strings in a string, the first an absolute path to the
    program (never a shell line: nothing is split, expanded or interpreted). ArgError otherwise.
    The allowCommands policy checks exactly what this returns (`secret:NAME` elements unresolved)."""
    try:
        argv = json.loads(text)
    except ValueError:
        raise ArgError("argv", 'argv must be a JSON list of strings in a string, like "[\\"/bin/echo\\", \\"hi\\"]"') from None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ArgError("argv", "argv must be a non-empty JSON list of strings")
    if len(argv) > MAX_ARGV:
        raise ArgError("argv", f"argv has {len(argv)} elements; at most {MAX_ARGV}")
    if any(len(a) > MAX_ARG_LEN or "\x00" in a for a in argv):
        raise ArgError("argv", f"an argv element is longer than {MAX_ARG_LEN} characters or holds a NUL")
    if not argv[0].startswith("/"):
        raise ArgError("argv", f"argv[0] must be the program's absolute path (no PATH look-up), got {argv[0]!r}")
    return argv


def _check_secret_form(arg: str, value: str) -> None:
    try:
        secret_name(value)
    except SecretError as exc:
        raise ArgError(arg, f"{arg}: {exc}") from None


def parse_timeout(args: Mapping[str, str]) -> int:
    return parse_whole_number("timeout", args["timeout"], 1, MAX_TIMEOUT_S) if "timeout" in args else DEFAULT_TIMEOUT_S


def parse_ok_codes(args: Mapping[str, str]) -> frozenset[int]:
    """`ok_codes`: comma-separated exit codes, each 0 to 255 in plain digits (spaces around commas allowed)."""
    text = args.get("ok_codes", "0")
    if len(text) > 2048:
        raise ArgError("ok_codes", "'ok_codes' is too long")
    return frozenset(parse_whole_number("ok_codes", part.strip(), 0, 255) for part in text.split(","))


def parse_cwd(args: Mapping[str, str]) -> str | None:
    if "cwd" not in args:
        return None
    cwd = args["cwd"]
    if not cwd.startswith("/") or "\x00" in cwd or len(cwd) > MAX_ARG_LEN:
        raise ArgError("cwd", f"'cwd' must be an absolute path (at most {MAX_ARG_LEN} characters), got {cwd[:200]!r}")
    return cwd


def parse_env(args: Mapping[str, str]) -> dict[str, str]:
    """`env`: a JSON object of NAME -> string value in a string (values may be `secret:NAME`)."""
    if "env" not in args:
        return {}
    try:
        env = json.loads(args["env"])
    except ValueError:
        raise ArgError("env", 'env must be a JSON object of NAME -> value in a string, like "{\\"MODE\\": \\"fast\\"}"') from None
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ArgError("env", "env must be a JSON object whose values are strings")
    if len(env) > MAX_ENV:
        raise ArgError("env", f"env has {len(env)} names; at most {MAX_ENV}")
    for name, value in env.items():
        if not ENV_NAME_RE.fullmatch(name) or len(name) > MAX_ENV_NAME_LEN:
            raise ArgError("env", f"env name {name[:200]!r} must be [A-Z_][A-Z0-9_]* (at most {MAX_ENV_NAME_LEN} characters)")
        if len(value) > MAX_ARG_LEN or "\x00" in value:
            raise ArgError("env", f"the value of env {name!r} is longer than {MAX_ARG_LEN} characters or holds a NUL")
        _check_secret_form("env", value)
    return env


def parse_attempts(args: Mapping[str, str]) -> int:
    return parse_whole_number("attempts", args["attempts"], 1, MAX_ATTEMPTS) if "attempts" in args else 1


# ------------------------------------------------------------ the user a program runs as

@dataclass(frozen=True)
class ExecUser:
    """WF_EXEC_USER resolved: the uid, primary gid and supplementary groups a program runs with."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    def spawn_args(self) -> dict[str, Any]:
        """What `create_subprocess_exec` needs to switch to this user (nothing when the runner is it)."""
        if self.uid == os.geteuid() and self.gid == os.getegid():
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


def resolve_exec_user(spec: str) -> ExecUser:
    """WF_EXEC_USER (a user name or a numeric uid) as an ExecUser; ValueError if no such user."""
    try:
        pw = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except (KeyError, ValueError, OverflowError):
        raise ValueError(f"{EXEC_USER_ENV}={spec!r} is not a user on this runner") from None
    try:
        groups = tuple(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except OSError:
        groups = (pw.pw_gid,)
    return ExecUser(pw.pw_name, pw.pw_uid, pw.pw_gid, groups)


def exec_user_problem(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """What the runner should say at start about the user exec programs run as: (event, message),
    or None when all is well. Never refuses to start: the exec jobs fail instead."""
    spec = environ.get(EXEC_USER_ENV, "")
    if not spec:
        if os.geteuid() == 0:
            return ("exec_runs_as_root", f"{EXEC_USER_ENV} is not set: exec jobs run as root, the runner's own "
                    f"user, and can read its credentials and kill it; set {EXEC_USER_ENV} to an unprivileged user "
                    f"(like nobody, or one made for it) for them to run as")
        return None
    try:
        user = resolve_exec_user(spec)
    except ValueError as exc:
        return ("exec_user_unknown", f"{exc}: every exec job will fail")
    if user.spawn_args() and os.geteuid() != 0:
        return ("exec_user_unswitchable", f"{EXEC_USER_ENV}={spec}: the runner is not root, exec jobs fail unless it "
                                          f"has CAP_SETUID and CAP_SETGID")
    return None


# ------------------------------------------------------------ everything of one run, from /proc

def _boot_ticks() -> int:
    """Now, in the clock ticks since boot that /proc/PID/stat's starttime counts."""
    try:
        return int(float(Path("/proc/uptime").read_text().split()[0]) * CLK_TCK)
    except (OSError, ValueError, IndexError):
        return 0


class _Tree:
    """Everything that belongs to one run of a program: its process group and session (both have its
    pid as id: it is started with start_new_session) and every process started since it was that
    carries its marker (`WF_EXEC_ID`) in its environment: a child that called setsid, a daemon.
    A process that both left the session and replaced its environment is not found (the documented
    limit; a cgroup per job would close it)."""

    def __init__(self, pid: int, marker: str, since_ticks: int) -> None:
        self.pid = pid
        self.needle = f"{MARKER_ENV}={marker}\0".encode()
        self.since = since_ticks - 2  # /proc/uptime is rounded: a margin

    def _carries_marker(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            return False  # gone, or not ours to read
        return environ.startswith(self.needle) or b"\0" + self.needle in environ

    def members(self) -> list[int]:
        """Live (not zombie) processes of the run, never the runner itself."""
        found = []
        me = os.getpid()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if pid == me or pid == 1:
                continue
            try:
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    stat = fh.read()
                fields = stat.rsplit(b")", 1)[1].split()
                state, pgrp, session, started = fields[0], int(fields[2]), int(fields[3]), int(fields[19])
            except (OSError, IndexError, ValueError):
                continue
            if state in (b"Z", b"X"):
                continue
            if self.pid in (pgrp, session) or (started >= self.since and self._carries_marker(pid)):
                found.append(pid)
        return found

    def signal(self, sig: signal.Signals) -> bool:
        """Send `sig` to the group and to every process of the run; whether any was found."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        members = self.members()
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        return bool(members)

    async def gone_within(self, within_s: float) -> bool:
        """Whether nothing of the run is left within `within_s` (polled, never a bare sleep)."""
        deadline = time.monotonic() + within_s
        while self.members():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


class _Program(asyncio.SubprocessProtocol):
    """The program, as asyncio's public subprocess protocol sees it: what it writes (stdout and
    stderr, interleaved as they come) goes to the job's output, which keeps it bounded; `exited` is
    set when the program itself exits, `closed` when its pipes are (a child that escaped may hold
    them open for ever: the outcome never waits for them)."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.output.write(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open:
            self.closed.set()

    def process_exited(self) -> None:
        self.exited.set()


def _die_with_the_runner() -> None:
    """In the child, after the switch to WF_EXEC_USER and before exec: SIGKILL when the runner dies,
    even by SIGKILL (Linux prctl PR_SET_PDEATHSIG), so a crashed runner leaves no program running
    while its command is redelivered to another."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _leftovers(job_prefix: str) -> list[int]:
    """Live processes whose environment carries a WF_EXEC_ID of this job (`<workflow>.<block>.<job>.`,
    any attempt): what an earlier attempt left when its runner died (the program itself dies with its
    runner; its children may not)."""
    needle = f"{MARKER_ENV}={job_prefix}".encode()
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in (me, 1):
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                environ = fh.read()
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X") and (environ.startswith(needle) or b"\0" + needle in environ):
            found.append(int(entry.name))
    return found


async def _reaped(tree: _Tree, exited: asyncio.Event) -> None:
    """Wait for the (killed) program to be reaped, even if cancelled again meanwhile."""
    while not exited.is_set():
        try:
            await exited.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(tree.pid, signal.SIGKILL)


async def _kill_now(tree: _Tree, exited: asyncio.Event) -> None:
    """SIGKILL the whole run at once, wait for the program to be reaped, then SIGKILL stragglers
    until none is left (a process forking as the first signal arrived)."""
    tree.signal(signal.SIGKILL)
    await _reaped(tree, exited)
    deadline = time.monotonic() + 5.0
    while tree.signal(signal.SIGKILL) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def _terminate(tree: _Tree, exited: asyncio.Event) -> None:
    """SIGTERM the whole run, SIGKILL whatever is left after the grace, reap."""
    tree.signal(signal.SIGTERM)
    if not await tree.gone_within(TERM_GRACE_S):
        tree.signal(signal.SIGKILL)
    await _kill_now(tree, exited)


def _last_line(ctx: JobContext) -> str:
    lines = [line.strip() for line in ctx.output.tail().splitlines() if line.strip()]
    if not lines:
        return ""
    line = ctx.secrets.redact(lines[-1])
    return line if len(line) <= LAST_LINE_CHARS else line[:LAST_LINE_CHARS] + "..."


class ExecJob:
    name = "exec"
    allowed_by = "allowCommands"  # default-deny: only where the WorkReq name's allowCommands policy allows it
    mandatory_args = frozenset({"argv"})
    optional_args = frozenset({"timeout", "ok_codes", "cwd", "env", "attempts", "fatal"})
    max_attempts = MAX_ATTEMPTS  # the upper bound; each use's own is `max_attempts_for(args)`
    retry_base_s = 1.0

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """`environ`: the runner's settings (Settings.job_settings); none: WF_EXEC_USER unset."""
        env = environ or {}
        # the OS user every program runs as (resolved at each run: a user made later is found)
        self.exec_user = env.get(EXEC_USER_ENV, "")

    def validate(self, args: Mapping[str, str]) -> None:
        argv = parse_argv(args["argv"])
        for element in argv[1:]:
            _check_secret_form("argv", element)
        parse_timeout(args)
        parse_ok_codes(args)
        parse_cwd(args)
        parse_env(args)
        parse_attempts(args)
        parse_fatal(args.get("fatal", "false"))

    async def clean_up_earlier_attempts(self, workflow_id: str, block: int, job: int) -> int:
        """Called by the runner when a command comes again after an attempt that did not end (its
        runner died): SIGKILL what that attempt left running on this host, found by its WF_EXEC_ID
        (the /proc scan in a thread: it reads every process's environment). How many were killed."""
        prefix = f"{workflow_id}.{block}.{job}."
        killed: set[int] = set()
        deadline = time.monotonic() + 5.0
        while (left := await asyncio.to_thread(_leftovers, prefix)) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            await asyncio.sleep(0.02)
        return len(killed)

    def max_attempts_for(self, args: Mapping[str, str]) -> int:
        """How many times this use may be started in all: its `attempts` arg (default 1)."""
        try:
            return parse_attempts(args)
        except ArgError:
            return 1

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None:
        argv = parse_argv(args["argv"])
        timeout_s = parse_timeout(args)
        ok_codes = parse_ok_codes(args)
        cwd = parse_cwd(args)
        job_env = parse_env(args)
        fatal = parse_fatal(args.get("fatal", "false"))
        program = argv[0]
        try:
            resolved = [program] + [ctx.secrets.resolve(a) for a in argv[1:]]
            env = {**BASE_ENV, **{k: ctx.secrets.resolve(v) for k, v in job_env.items()}}
        except SecretError as exc:
            raise JobError(str(exc), fatal=fatal) from None
        user: ExecUser | None = None
        if self.exec_user:
            try:
                user = resolve_exec_user(self.exec_user)
            except ValueError as exc:
                raise JobError(f"cannot run {program}: {exc}", fatal=fatal) from None
        marker = f"{ctx.attempt_id}-{secrets.token_hex(8)}"
        env[MARKER_ENV] = marker  # last: a job's own WF_EXEC_ID never replaces it

        ctx.log.info("exec_starting", program=program, args=len(argv) - 1, cwd=cwd or "", env_names=sorted(job_env),
                     timeout_s=timeout_s, user=user.name if user else "")
        started = time.monotonic()
        since = _boot_ticks()
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Program(ctx.output), *resolved, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env,
                start_new_session=True, preexec_fn=_die_with_the_runner,  # noqa: PLW1509 (one prctl call)
                **(user.spawn_args() if user else {}))
        except OSError as exc:
            message = self._start_error(program, cwd, exc, user)
            ctx.log.info("exec_not_started", program=program, error=message)
            raise JobError(message, fatal=fatal) from None
        pid = transport.get_pid()
        tree = _Tree(pid, marker, since)
        exited = protocol.exited

        pipes_closed = asyncio.ensure_future(protocol.closed.wait())
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    await exited.wait()  # the program's exit, whoever still holds its pipes
            except TimeoutError:
                await _terminate(tree, exited)
                await self._drain(pipes_closed)
                ctx.log.info("exec_timed_out", program=program, timeout_s=timeout_s)
                raise JobError(f"timed out after {timeout_s} s", retryable=True, fatal=fatal) from None
            # exited: what it left running gets a moment to finish writing, then goes
            await asyncio.wait({pipes_closed}, timeout=LINGER_S)
            if tree.members():
                await _terminate(tree, exited)
            await self._drain(pipes_closed)
        except asyncio.CancelledError:
            await _kill_now(tree, exited)
            await self._drain(pipes_closed)
            ctx.log.info("exec_cancelled", program=program, pid=pid)
            raise
        finally:
            if transport.get_returncode() is None:  # a bug above: never leave it running
                tree.signal(signal.SIGKILL)
            transport.close()  # the pipes too, should something we could not find still hold them
            if not pipes_closed.done():
                pipes_closed.cancel()

        code = transport.get_returncode()
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        ctx.log.info("exec_ended", program=program, exit_code=code, duration_ms=duration_ms)
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            raise JobError(self._with_last_line(f"killed by signal {name}", ctx), fatal=fatal)
        if code not in ok_codes:
            raise JobError(self._with_last_line(f"exited with code {code}", ctx), fatal=fatal)

    @staticmethod
    def _with_last_line(message: str, ctx: JobContext) -> str:
        last = _last_line(ctx)
        return ctx.secrets.redact(f"{message}: {last}" if last else message)

    @staticmethod
    async def _drain(pipes_closed: asyncio.Future[Any]) -> None:
        """The pipes close once every writer is gone: what is still on its way is read (bounded)."""
        await asyncio.wait({pipes_closed}, timeout=1.0)

    @staticmethod
    def _start_error(program: str, cwd: str | None, exc: OSError, user: ExecUser | None = None) -> str:
        if user is not None and exc.filename is None and user.spawn_args():
            # failed before exec, not on the program nor the cwd: switching the user
            return (f"cannot run {program} as {EXEC_USER_ENV} {user.name}: the runner cannot switch to that user "
                    f"({exc.strerror or exc}); run the runner as root or with CAP_SETUID and CAP_SETGID")
        if cwd is not None and not os.path.isdir(cwd):
            return f"cannot run {program}: cwd {cwd} does not exist or is not a directory"
        if isinstance(exc, FileNotFoundError):
            return f"cannot run {program}: no such program"
        if isinstance(exc, PermissionError):
            where = f" or cwd {cwd} is not accessible" if cwd else ""
            return f"cannot run {program}: permission denied (not executable{where})"
        return f"cannot run {program}: {exc.strerror or exc}"
