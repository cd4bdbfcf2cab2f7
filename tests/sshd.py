"""A real OpenSSH server for tests: Debian's `/usr/sbin/sshd`, started on a free 127.0.0.1 port.

    server = start_sshd(tmp_path)          # or sshd_or_skip(tmp_path) inside a test or fixture
    server.env()  -> {"WF_SSH_KEY": ..., "WF_SSH_KNOWN_HOSTS": ...}   (for a runner or `start_system`)
    server.user, server.port, server.client_key, server.known_hosts, server.host_key_line
    server.stop()                          # kills the listener and every session it started

Everything lives in one directory: a generated ed25519 host key, a generated client key pair, the
`authorized_keys` holding the client's public key, the `sshd_config`, the pid file and sshd's log
(`sshd.log`, what `-e` prints: read it when a test fails). Only public-key login as the current
user is allowed (root: `PermitRootLogin prohibit-password`); no PAM, passwords, keyboard-interactive,
agent or TCP forwarding.

sshd must be installed: `make test` installs openssh-server when `/usr/sbin/sshd` is missing and
apt-get is there (`python -m tests.sshd install`, the same code as `ensure_sshd()`). A test skips
only when sshd is missing and cannot be installed (not root and no password-less sudo, or no
apt-get); under CI (`CI` set in the environment) it fails instead, so CI never skips it silently.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.procs import descendants

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # sshd running as root refuses to start without it
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Sshd:
    proc: subprocess.Popen  # type: ignore[type-arg]
    port: int
    user: str
    directory: Path
    client_key: Path  # the private key that may log in (its public key is in authorized_keys)
    known_hosts: Path  # one line: [127.0.0.1]:PORT with this server's host key
    host_key_line: str  # that line
    host: str = HOST
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.directory / "sshd.log"

    def env(self) -> dict[str, str]:
        """The runner's configuration for this server (the `ssh` job reads these)."""
        return {"WF_SSH_KEY": str(self.client_key), "WF_SSH_KNOWN_HOSTS": str(self.known_hosts)}

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill the listener and every session process it started (even those in their own session)."""
        if self.proc.poll() is None:
            below = descendants(self.proc.pid)
            self.proc.kill()
            for pid in below:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    return path.with_name(path.name + ".pub").read_text().strip()


def _config(directory: Path, port: int, host_key: Path, user: str) -> str:
    lines = [
        f"ListenAddress {HOST}:{port}",
        f"HostKey {host_key}",
        f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        "StrictModes no",
        "UsePAM no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PermitTunnel no",
        "PermitUserEnvironment no",
        f"PermitRootLogin {'prohibit-password' if os.geteuid() == 0 else 'no'}",
        f"AllowUsers {user}",
        "UseDNS no",
        "PrintMotd no",
        "LogLevel VERBOSE",
        "MaxStartups 100",
        "ClientAliveInterval 5",
    ]
    return "\n".join(lines) + "\n"


def _wait_ready(proc: subprocess.Popen, port: int, deadline: float) -> bool:  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as sock:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                if sock.recv(64).startswith(b"SSH-"):  # the server's banner: it really is sshd
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def start_sshd(directory: Path, ready_s: float = 20, user: str | None = None) -> Sshd:
    """Start sshd in `directory` (created) on a free loopback port; RuntimeError (with sshd's log)
    if it does not answer with its banner within `ready_s`. `user`: who may log in (default: the
    current user; another one needs sshd run as root, and `directory` is made readable to it)."""
    if not SSHD.exists():
        raise RuntimeError(f"{SSHD} is missing: install openssh-server (make test does)")
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    user = user or getpass.getuser()
    if user != getpass.getuser():  # sshd reads authorized_keys as that user
        directory.chmod(0o755)
    host_key, client_key = directory / "host_ed25519", directory / "client_ed25519"
    host_pub = _keygen(host_key, "wf-test-host")
    client_pub = _keygen(client_key, "wf-test-client")
    (directory / "authorized_keys").write_text(client_pub + "\n")
    (directory / "authorized_keys").chmod(0o644)
    last_error = ""
    for _ in range(3):  # a port taken between choosing it and sshd binding it: another one
        port = _free_port()
        config = directory / "sshd_config"
        config.write_text(_config(directory, port, host_key, user))
        log_path = directory / "sshd.log"
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        if _wait_ready(proc, port, time.monotonic() + ready_s):
            known_line = f"[{HOST}]:{port} {' '.join(host_pub.split()[:2])}"
            known_hosts = directory / "known_hosts"
            known_hosts.write_text(known_line + "\n")
            return Sshd(proc, port, user, directory, client_key, known_hosts, known_line)
        proc.kill()
        proc.wait(timeout=10)
        last_error = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"sshd did not start on {HOST}:\n{last_error}")


def _install_command() -> list[str] | None:
    """How to run apt-get as root here, or None (not root and no password-less sudo)."""
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True, timeout=30).returncode == 0:
        return [sudo, "-n"]
    return None


def ensure_sshd(quiet: bool = True) -> str:
    """Install openssh-server when sshd is missing and apt-get is there; "" when sshd is there now,
    otherwise why it is not. The package's scripts are kept from starting the system's sshd
    (policy-rc.d says no), which also keeps them from failing in a container without systemd."""
    if SSHD.exists():
        return ""
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        return f"{SSHD} is missing and there is no apt-get to install openssh-server"
    as_root = _install_command()
    if as_root is None:
        return f"{SSHD} is missing and openssh-server cannot be installed (not root, no password-less sudo)"
    out = subprocess.DEVNULL if quiet else None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = False
    try:
        if not policy.exists():
            subprocess.run([*as_root, "sh", "-c", f"printf '#!/bin/sh\\nexit 101\\n' > {policy} && chmod 755 {policy}"],
                           check=True, timeout=30)
            added_policy = True
        install = [*as_root, "env", "DEBIAN_FRONTEND=noninteractive", apt_get, "-q", "-y",
                   "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
                   "install", "--no-install-recommends", "openssh-server"]
        if subprocess.run(install, stdout=out, stderr=out, env=env, timeout=900).returncode != 0:
            # the package lists may be missing or stale on a fresh machine
            subprocess.run([*as_root, apt_get, "-q", "update"], stdout=out, stderr=out, env=env, timeout=900)
            result = subprocess.run(install, stdout=out, stderr=subprocess.PIPE, env=env, timeout=900, text=True)
            if result.returncode != 0 and not SSHD.exists():
                return f"installing openssh-server failed: {(result.stderr or '').strip()[-500:]}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"installing openssh-server failed: {exc}"
    finally:
        if added_policy:
            subprocess.run([*as_root, "rm", "-f", str(policy)], timeout=30)
    return "" if SSHD.exists() else f"{SSHD} is still missing after installing openssh-server"


def sshd_or_skip(directory: Path) -> Sshd:
    """For tests: a started sshd; skip (fail under CI) when sshd is missing and cannot be installed."""
    import pytest

    reason = ensure_sshd()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the ssh tests, but {reason}")
        pytest.skip(reason)
    return start_sshd(directory)


def main(argv: list[str]) -> int:
    """`python -m tests.sshd install`: what `make test` runs first."""
    if argv != ["install"]:
        print("usage: python -m tests.sshd install", file=sys.stderr)
        return 2
    if SSHD.exists():
        return 0
    print("installing openssh-server (a real sshd for the ssh job's tests)...", file=sys.stderr)
    reason = ensure_sshd()
    if not reason:
        return 0
    print(f"warning: {reason}; the tests that need sshd will skip", file=sys.stderr)
    return 1 if os.environ.get("CI") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
