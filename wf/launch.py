"""Start `wf up` in a subprocess and wait until it is ready: the one launcher that `wf demo`, `wf bench`
and the tests' fixtures (tests/conftest.py) use.

`wf up` announces readiness by writing `<data-dir>/client.env` once every service answers (wf/up.py),
so ready means that file exists; it is waited for with a deadline, and a `wf up` that exits first is
reported at once. The system is stopped with SIGTERM (`wf up` stops its services and nats-server)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .up import die_with_parent, free_port

READY_FILE = "client.env"
POLL_S = 0.05


class NotReady(Exception):
    """`wf up` exited, or did not become ready within the deadline (the message says which)."""


@dataclass
class Launched:
    """A `wf up` started by `start`: its process, where it keeps its store and its log, its port."""

    proc: subprocess.Popen
    data_dir: Path
    log_path: Path
    port: int  # the embedded server's (0 with `nats_url`: an external server)

    def url(self, role: str = "admin") -> str:
        """The WF_NATS_URL of `<data-dir>/<role>.env` (written once the system is ready)."""
        return env_url(self.data_dir, role)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, deadline_s: float) -> None:
        """Block until ready; NotReady when `wf up` exits first or the deadline passes."""
        end = time.monotonic() + deadline_s
        while not self._ready(end, deadline_s):
            time.sleep(POLL_S)

    async def ready(self, deadline_s: float) -> None:
        """`wait_ready` for a caller inside an event loop."""
        end = time.monotonic() + deadline_s
        while not self._ready(end, deadline_s):
            await asyncio.sleep(POLL_S)

    def _ready(self, end: float, deadline_s: float) -> bool:
        if (self.data_dir / READY_FILE).exists():
            return True
        if self.proc.poll() is not None:
            raise NotReady(f"`wf up` exited with {self.proc.returncode} before it was ready")
        if time.monotonic() > end:
            raise NotReady(f"`wf up` was not ready within {deadline_s:.0f} s")
        return False

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM (unless it has exited already), then wait for it; its exit code."""
        return stop(self.proc, timeout_s)


def start(data_dir: Path, *args: str, log_path: Path, port: int | None = None, config_dir: Path | None = None,
          env: dict[str, str] | None = None, cwd: Path | None = None, own_session: bool = False,
          with_parent: bool = True, nats_url: str | None = None) -> Launched:
    """`python -m wf.cli up --nats-port PORT --data-dir DATA_DIR [--config-dir CONFIG_DIR] ARGS...`, its
    output (both streams) to `log_path`. `port`: a free loopback port unless given; `nats_url`: no
    embedded server, `wf up --nats-url NATS_URL` (a server or cluster of your own); `env`: the whole
    environment (default: this process's); `own_session`: its own session, so that a Ctrl-C in this
    terminal is not sent to it too; `with_parent`: it gets SIGTERM when this process dies, even by
    SIGKILL (no system left running). Returns at once: wait with `wait_ready` or `ready`."""
    argv = [sys.executable, "-m", "wf.cli", "up"]
    if nats_url is not None:
        port = 0
        argv += ["--nats-url", nats_url]
    else:
        port = free_port() if port is None else port
        argv += ["--nats-port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    if config_dir is not None:
        argv += ["--config-dir", str(config_dir)]
    argv += args
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=own_session,
                                preexec_fn=die_with_parent if with_parent else None)  # noqa: PLW1509 (one prctl call)
    return Launched(proc, data_dir, log_path, port)


def env_url(data_dir: Path, role: str) -> str:
    """The URL in `<data-dir>/<role>.env` (`WF_NATS_URL=...`) of a running `wf up`."""
    return (data_dir / f"{role}.env").read_text().strip().partition("=")[2]


def stop(proc: subprocess.Popen, timeout_s: float = 30) -> int:
    """Stop a `wf up` (SIGTERM: it stops its services and nats-server), unless it has exited already;
    wait at most `timeout_s` for it. Its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout_s)
