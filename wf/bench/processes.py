"""What each process of a running `wf up` uses, read from /proc: peak resident memory and CPU time,
by service name (its replicas together) and nats-server. Linux only, as `wf bench` is."""

from __future__ import annotations

import os
from pathlib import Path

from services.common.topology import SERVICE_NAMES, SERVICE_ROLES

_SERVICE_NAME = dict(zip(SERVICE_ROLES, SERVICE_NAMES, strict=True))  # `services.<role>` -> wf-<role>


def _children(root_pid: int) -> list[tuple[str, str, str]]:
    """(name, /proc status, /proc stat) of each process `wf up` started: its services and nats-server."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != root_pid:
            continue
        module = next((part.decode() for part in cmdline if part.startswith(b"services.")), None)
        name = _SERVICE_NAME.get(module.split(".")[1]) if module else ("nats-server" if b"nats-server" in cmdline[0] else None)
        if name:
            found.append((name, status, stat))
    return found


def peak_rss_mb(root_pid: int) -> dict[str, float]:
    """Peak resident memory (VmHWM) of each service process under `wf up`, by service name."""
    peaks: dict[str, float] = {}
    for name, status, _ in _children(root_pid):
        hwm = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
        if hwm:
            peaks[name] = max(peaks.get(name, 0.0), round(int(hwm.split()[1]) / 1024, 1))
    return peaks


def cpu_seconds(root_pid: int) -> dict[str, float]:
    """CPU time (user + system) used so far by each service (its replicas together) and nats-server."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for name, _, stat in _children(root_pid):
        fields = stat.rsplit(")", 1)[1].split()
        used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used
