"""Register name: "ssh"

Args:
    "host"(mandatory): the one machine to run the command on, reached by that name: a machine of
        the inventory as MACHINE.SITE (like "aa01.aap": machine names repeat across sites, and an
        allowHosts entry for a site allows its machines in this form), an IPv4 or IPv6 address (like "10.0.0.7", "fd00::7",
        without brackets) or a DNS host name (like "web-1.example.net": letters, digits and
        hyphens in dot-separated labels, at most 253 characters; one whose last label is all
        digits, like "10.1", is refused: a resolver would read an address from it). No port,
        user or brackets in it (see "port", "user"). A site name of the inventory is refused:
        it is many machines, not one (use one job per machine). The WorkReq name's `allowHosts`
        policy must allow the host, or the WorkReq is rejected (default-deny).
    "user"(mandatory): the remote user name, POSIX syntax: a letter or "_", then up to 31 letters,
        digits, "_", "." or "-", like "deploy".
    "command"(mandatory): the command line, given as it is to the remote user's login shell (so
        shell syntax applies there), like "systemctl restart nginx". 1 to 16,384 bytes (UTF-8), no
        NUL, not only white space. Plain text: `secret:NAME` is not resolved in it, so a command
        never carries a secret's value.
    "port"(optional): the SSH port, from 1 to 65,535; default "22".
    "timeout"(optional): whole seconds for the whole run (connecting, logging in and the command),
        from 1 to 86,400; default "60". Not scaled by the runner's `--time-scale` (real work).
    "ok_codes"(optional): the exit codes that count as success, comma-separated, each 0 to 255,
        at most 32 of them, like "0,3"; default "0".
    "attempts"(optional): how many times the job may run in all when its failure is retryable,
        from 1 to 10; default "3". "1" never retries.
    "fatal"(optional): "true" or "false" (default): whether a failure for good (a bad exit code,
        a refused login, a retryable failure on the last attempt) is fatal: it cancels the rest
        of its block and stops later blocks.

Runner configuration (its environment, read once at start by services/common/settings.py; never in a WorkReq):
    WF_SSH_KEY: the path of the private key the runner logs in with (unencrypted; a certificate
        beside it as `<path>-cert.pub` is used too). Required: without it the job fails, not retried.
    WF_SSH_KNOWN_HOSTS: the path of an OpenSSH known_hosts file. Required: host keys are ALWAYS
        verified against it, never learnt: a host it does not list or whose key differs is refused
        before logging in, so nothing is run, and the failure names the host and is not retried.
        For a port other than 22 the `[host]:port` lines are used, or when there are none for that
        host and port, the host's plain lines (asyncssh's rule: the host's key is trusted on any
        port, as long as it is that key).
    Nothing else is used: no SSH agent, no agent or X11 forwarding, no password or
    keyboard-interactive login (public key only), no ~/.ssh/config, ~/.ssh/known_hosts or GSSAPI.

Result:
    Connects to host:port, verifies its host key, logs in as `user` with the runner's key and runs
    `command` on a pseudo-terminal (TERM=dumb, no echo, no CR added to line ends). Its input is
    that terminal, which gives one end of file at once: the first read of it gets nothing, a
    second one would wait until the timeout (give such a command `</dev/null`). Completes when the
    exit status is one of `ok_codes`; otherwise fails with "exited with code N: <last line of
    output>" (or "killed by signal S"), not retried.

Output:
    stdout and stderr (one stream, as a terminal shows them) go to the job's output as they arrive:
    the last 4 KiB in its terminal event and StatusResp entry, more with `wf logs ID BLOCK JOB`,
    with the runner's secrets redacted.

Retries (the runner's backoff, 1 s x 2^(attempt-1), up to `attempts`):
    Retried: connection refused, host or network unreachable, a DNS look-up that failed for now,
    the timeout, the connection lost mid-run, a session the server could not open for now.
    Not retried: the runner's key or known_hosts missing or unusable, a host key unknown or
    mismatched, the login refused, a bad exit code, any other SSH protocol failure.
    What is safe to retry: a failure before the command started (connecting, host key, login)
    ran nothing. After a timeout or a lost connection the command may have run partly or fully:
    retry only commands that may run twice (idempotent ones, like "systemctl restart nginx"),
    otherwise give "attempts" "1".

Stopping: on the timeout, a cancel or an emergency stop the command is stopped at once: a KILL
    signal request for its session (OpenSSH 7.9+ runs it for a non-root login: the whole process
    group dies), then the channel and connection are closed, which hangs up its terminal (the
    session's processes get SIGHUP; this is what stops a root login's command, OpenSSH ignores
    signal requests there). A process that leaves the session on purpose (setsid, a daemon; for
    a root login nohup too) is beyond both. A connection lost mid-run leaves the remote side to sshd, which hangs up the
    terminal when it notices.

Logs: host, port, user, the exit code and the outcome; never the key, the command or its output
    (but for a failure's message, which quotes the last line of output, secrets redacted).

Code: the arguments and the job here; the run with asyncssh in ssh_session.py (loaded by a runner only).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from services.inventory import InventorySource

from . import ArgError, JobContext, inventory_or_arg_error, parse_fatal, parse_whole_number

MAX_COMMAND_BYTES = 16 * 1024
MAX_TIMEOUT_S = 86_400
DEFAULT_TIMEOUT_S = 60
DEFAULT_PORT = 22
MAX_ATTEMPTS = 10
DEFAULT_ATTEMPTS = 3
MAX_OK_CODES = 32
LAST_LINE_CHARS = 200
KEEPALIVE_S = 15  # a silent, dead connection is noticed in about a minute (x4)
CLOSE_WAIT_S = 2.0  # at most this long for the server to confirm the close, once the kill is sent
KEY_ENV = "WF_SSH_KEY"
KNOWN_HOSTS_ENV = "WF_SSH_KNOWN_HOSTS"

_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SITE_RE = re.compile(r"[a-z]{3}")
_OK_CODE_RE = re.compile(r"[0-9]{1,3}")


def parse_host(text: str) -> str:
    """An address or a DNS host name (syntax only); ArgError otherwise."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        shown = text if len(text) <= 60 else text[:60] + "..."
        raise ArgError("host", f"'host' must be a machine name from the inventory, an IPv4 or IPv6 address or a "
                               f"DNS host name (labels of letters, digits and '-', dot-separated), got {shown!r}")
    if labels[-1].isdigit():  # "10.1" or "127.0.0.300": the resolver would read an address from it
        raise ArgError("host", f"'host' {text!r} is neither an address nor a host name (its last label is all digits)")
    return text


def parse_user(text: str) -> str:
    if not _USER_RE.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ArgError("user", f"'user' must be a POSIX user name (a letter or '_', then up to 31 letters, digits, "
                               f"'_', '.' or '-'), got {shown!r}")
    return text


def parse_command(text: str) -> str:
    if "\x00" in text:
        raise ArgError("command", "'command' may not contain a NUL character")
    if not text.strip():
        raise ArgError("command", "'command' is empty")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_COMMAND_BYTES:
        raise ArgError("command", f"'command' is {size:,} bytes; at most {MAX_COMMAND_BYTES:,}")
    return text


def parse_ok_codes(text: str) -> frozenset[int]:
    parts = text.split(",")
    if len(parts) > MAX_OK_CODES or not all(_OK_CODE_RE.fullmatch(p) and int(p) <= 255 for p in parts):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ArgError("ok_codes", f"'ok_codes' must be 1 to {MAX_OK_CODES} exit codes from 0 to 255, comma-separated "
                                   f"in plain digits, like \"0,3\", got {shown!r}")
    return frozenset(int(p) for p in parts)


@dataclass(frozen=True)
class SshArgs:
    host: str
    user: str
    command: str
    port: int
    timeout_s: int
    ok_codes: frozenset[int]
    attempts: int
    fatal: bool


def parse_args(args: Mapping[str, str]) -> SshArgs:
    return SshArgs(
        host=parse_host(args["host"]),
        user=parse_user(args["user"]),
        command=parse_command(args["command"]),
        port=parse_whole_number("port", args.get("port", str(DEFAULT_PORT)), 1, 65_535),
        timeout_s=parse_whole_number("timeout", args.get("timeout", str(DEFAULT_TIMEOUT_S)), 1, MAX_TIMEOUT_S),
        ok_codes=parse_ok_codes(args.get("ok_codes", "0")),
        attempts=parse_whole_number("attempts", args.get("attempts", str(DEFAULT_ATTEMPTS)), 1, MAX_ATTEMPTS),
        fatal=parse_fatal(args.get("fatal", "false")),
    )


class SshJob:
    name = "ssh"
    allowed_by = "allowHosts"  # default-deny: only where the WorkReq name's allowHosts policy allows it
    mandatory_args = frozenset({"host", "user", "command"})
    optional_args = frozenset({"port", "timeout", "ok_codes", "attempts", "fatal"})
    max_attempts = MAX_ATTEMPTS  # the most any WorkReq may ask for; `attempts` says how many for each use
    retry_base_s = 1.0

    def __init__(self, inventory: InventorySource, environ: Mapping[str, str] | None = None) -> None:
        self.inventory = inventory
        self._environ = environ  # the runner's settings (Settings.job_settings)

    def max_attempts_for(self, args: Mapping[str, str]) -> int:
        """How many times this use of the job may run in all (`attempts`, default 3)."""
        try:
            return parse_whole_number("attempts", args.get("attempts", str(DEFAULT_ATTEMPTS)), 1, MAX_ATTEMPTS)
        except ArgError:
            return 1

    def validate(self, args: Mapping[str, str]) -> None:
        parsed = parse_args(args)
        if _SITE_RE.fullmatch(parsed.host):  # could name a site: those are many machines, not one host
            inventory = inventory_or_arg_error(self.inventory, "host")
            if inventory.site(parsed.host) is not None:
                machines = ", ".join(inventory.machines_at(parsed.host)[:10]) or "none"
                raise ArgError("host", f"'host' {parsed.host!r} is a site of the inventory, not one machine: use one "
                                       f"ssh job per machine (its machines: {machines})")

    # ------------------------------------------------------------ the runner's configuration

    # ------------------------------------------------------------ running (services/jobs/ssh_session.py)

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None:
        # asyncssh (and cryptography) only where jobs run: wf-policy and wf-executor build this job
        # to validate WorkReqs and never run it (about 15 MB less in each)
        from .ssh_session import run_ssh

        await run_ssh(parse_args(args), self._environ or {}, ctx)
