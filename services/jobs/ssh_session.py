"""The `ssh` job's run time, with asyncssh: imported only by a runner when it runs one (ssh_cmd.py
documents the job; wf-policy and wf-executor, which only validate it, never load asyncssh)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import asyncssh

from . import JobContext, JobError
from .ssh_cmd import CLOSE_WAIT_S, KEEPALIVE_S, KEY_ENV, KNOWN_HOSTS_ENV, LAST_LINE_CHARS, SshArgs


class _Session(asyncssh.SSHClientSession[bytes]):
    """Streams what the command prints into the job's output; keeps the end for the error message."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.end = b""
        self.lost: Exception | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.ctx.output.write(data)
        self.end = (self.end + data)[-4 * LAST_LINE_CHARS:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc

    def last_line(self) -> str:
        lines = [line.strip() for line in self.end.decode("utf-8", "replace").splitlines() if line.strip()]
        line = lines[-1] if lines else "(no output)"
        if len(line) > LAST_LINE_CHARS:
            line = line[:LAST_LINE_CHARS] + "..."
        return self.ctx.secrets.redact(line)


def _options(a: SshArgs, keys: list[asyncssh.SSHKeyPair], known_hosts: asyncssh.SSHKnownHosts) -> asyncssh.SSHClientConnectionOptions:
    """Public-key login with the runner's key only, the host key checked against its known_hosts
    only: no agent, no forwarding, no password or keyboard-interactive prompt, no GSSAPI or
    host-based login, no ~/.ssh config, known_hosts or X.509 certificates."""
    return asyncssh.SSHClientConnectionOptions(
        username=a.user, client_keys=keys, known_hosts=known_hosts, config=None, agent_path=None,
        agent_forwarding=False, password=None, password_auth=False, kbdint_auth=False, gss_auth=False,
        gss_kex=False, host_based_auth=False, public_key_auth=True, preferred_auth="publickey",
        x509_trusted_certs=None, x509_trusted_cert_paths=None, pkcs11_provider=None,
        keepalive_interval=KEEPALIVE_S, keepalive_count_max=4)


@dataclass
class _Run:
    """One run's connection and session, as far as it got."""

    conn: asyncssh.SSHClientConnection | None = None
    chan: asyncssh.SSHClientChannel[bytes] | None = None
    session: _Session | None = None

    @property
    def started(self) -> bool:
        return self.chan is not None

    def stop(self) -> None:
        """At once, without waiting: KILL the session's process group (OpenSSH 7.9+, non-root
        logins), then close the channel and the connection (the command's terminal hangs up: its
        session gets SIGHUP, root logins too)."""
        if self.chan is not None:
            with contextlib.suppress(OSError, ValueError, asyncssh.Error):
                self.chan.send_signal("KILL")
            self.chan.close()
        if self.conn is not None:
            self.conn.close()

    async def closed(self) -> None:
        """Wait a little for the connection to be closed (the kill and the close are already sent)."""
        if self.conn is not None:
            with contextlib.suppress(asyncio.TimeoutError, OSError, asyncssh.Error):
                await asyncio.wait_for(self.conn.wait_closed(), CLOSE_WAIT_S)


async def _run_command(run: _Run, a: SshArgs, options: asyncssh.SSHClientConnectionOptions, ctx: JobContext) -> None:
    """Connect, start the command on a terminal and wait for it to end; `run` records how far it got."""
    run.conn = await asyncssh.connect(a.host, a.port, options=options)
    run.chan, session = await run.conn.create_session(
        lambda: _Session(ctx), a.command, encoding=None, request_pty="force", term_type="dumb",
        term_modes={asyncssh.PTY_ECHO: 0, asyncssh.PTY_OPOST: 0}, x11_forwarding=False, env={}, send_env=())
    run.session = cast(_Session, session)  # what the factory above made
    run.chan.write(b"\x04")  # an end of file for the first read of the terminal
    run.chan.write_eof()
    await run.chan.wait_closed()


def _failure(exc: BaseException, a: SshArgs, started: bool) -> tuple[str, bool]:
    """What a failure to connect, log in or run means: its message, and whether it is retryable."""
    where = f"{a.host}:{a.port}"
    match exc:
        case TimeoutError() if exc.errno is None:  # the job's own timeout (not the system's ETIMEDOUT)
            what = "running the command on" if started else "connecting to"
            stopped = " (the command was stopped)" if started else ""
            return f"timed out after {a.timeout_s} s {what} {where}{stopped}", True
        case asyncssh.HostKeyNotVerifiable():
            return (f"host key of {where} not verified: {_reason(exc)}: {a.host} is not in the runner's known_hosts "
                    f"with this key ({KNOWN_HOSTS_ENV}); refused, nothing was run"), False
        case asyncssh.PermissionDenied():
            return f"login as {a.user!r} on {where} refused: {_reason(exc)} (public key only: the runner's {KEY_ENV})", False
        case asyncssh.ConnectionLost():
            what = "while running the command" if started else "while logging in"
            return f"connection to {where} lost {what}: {_reason(exc)}", True
        case asyncssh.ChannelOpenError():
            transient = exc.code in (asyncssh.OPEN_RESOURCE_SHORTAGE, asyncssh.OPEN_CONNECT_FAILED)
            return f"the session on {where} could not be opened: {_reason(exc)}", transient
        case asyncssh.Error():
            return f"ssh to {where} failed: {_reason(exc)}", False
        case socket.gaierror():  # a name that does not resolve now may resolve later; one that does not exist, never
            return f"cannot resolve {a.host!r}: {exc.strerror or exc}", exc.errno == socket.EAI_AGAIN
        case OSError():  # refused, unreachable, reset: the host may come back
            return f"cannot connect to {where}: {os.strerror(exc.errno) if exc.errno else _reason(exc)}", True
    raise exc


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or exc) or type(exc).__name__


def runner_config(environ: Mapping[str, str], host: str) -> tuple[list[asyncssh.SSHKeyPair], asyncssh.SSHKnownHosts]:
    """The runner's key and known_hosts (WF_SSH_KEY, WF_SSH_KNOWN_HOSTS); JobError when unusable."""
    key_path, known_path = environ.get(KEY_ENV, ""), environ.get(KNOWN_HOSTS_ENV, "")
    if not key_path:
        raise JobError(f"this runner has no SSH key: set {KEY_ENV} to its private key's path")
    if not known_path:
        raise JobError(f"this runner has no known_hosts: set {KNOWN_HOSTS_ENV} to an OpenSSH known_hosts file "
                       f"listing {host}'s host key (host keys are always verified)")
    try:
        keys = list(asyncssh.load_keypairs([key_path]))
    except (OSError, asyncssh.KeyImportError, ValueError) as exc:
        raise JobError(f"the runner's SSH key {key_path} ({KEY_ENV}) is unusable: {_reason(exc)}") from None
    if not keys:
        raise JobError(f"the runner's SSH key {key_path} ({KEY_ENV}) holds no private key")
    try:
        known = asyncssh.read_known_hosts(known_path)
    except (OSError, ValueError, asyncssh.KeyImportError) as exc:
        raise JobError(f"the runner's known_hosts {known_path} ({KNOWN_HOSTS_ENV}) is unusable: {_reason(exc)}; "
                       f"refused to connect to {host}") from None
    return keys, known


async def run_ssh(a: SshArgs, environ: Mapping[str, str], ctx: JobContext) -> None:
    """One run of an ssh job (its args parsed): connect, run, judge the exit (JobError to fail)."""
    where = f"{a.host}:{a.port}"
    retry = ctx.attempt < a.attempts  # whatever the runner's own limit, `attempts` is kept

    def fail(message: str, *, retryable: bool = False) -> JobError:
        retryable = retryable and retry
        ctx.log.info("ssh_failed", host=a.host, port=a.port, user=a.user, error=message, retryable=retryable)
        return JobError(message, fatal=a.fatal, retryable=retryable)  # (a failure that is retried ends nothing)

    try:
        keys, known_hosts = runner_config(environ, where)
    except JobError as err:
        raise fail(err.message) from None
    try:
        options = _options(a, keys, known_hosts)
    except (ValueError, OSError) as exc:
        raise fail(f"ssh options for {where} are unusable: {_reason(exc)}") from None
    ctx.log.info("ssh_connecting", host=a.host, port=a.port, user=a.user, timeout_s=a.timeout_s)
    run = _Run()
    try:
        async with asyncio.timeout(a.timeout_s):
            await _run_command(run, a, options, ctx)
    except asyncio.CancelledError:  # cancel or emergency stop: nothing may go on running remotely
        run.stop()
        ctx.log.info("ssh_cancelled", host=a.host, port=a.port, user=a.user)
        await run.closed()
        raise
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        run.stop()  # the timeout: the command is stopped at once, as for a cancel
        await run.closed()
        message, retryable = _failure(exc, a, run.started)
        raise fail(message, retryable=retryable) from None
    finally:
        if run.conn is not None:
            run.conn.close()  # (again is harmless)

    assert run.chan is not None and run.session is not None
    if run.session.lost is not None:
        raise fail(f"connection to {where} lost while running the command: {_reason(run.session.lost)}", retryable=True)
    status, signal = run.chan.get_exit_status(), run.chan.get_exit_signal()
    if signal is not None:
        raise fail(f"killed by signal {signal[0]} on {where}: {run.session.last_line()}")
    if status is None:
        raise fail(f"the session on {where} ended without an exit status (connection lost?)", retryable=True)
    ctx.log.info("ssh_exited", host=a.host, port=a.port, user=a.user, exit_code=status)
    if status not in a.ok_codes:
        raise fail(f"exited with code {status}: {run.session.last_line()}")
