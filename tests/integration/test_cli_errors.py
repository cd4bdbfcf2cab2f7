"""The `wf` command against a real system with the wrong credential: one line naming the credential
needed, at once (not after a request's timeout), no traceback; the traceback with --debug."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration
JETSTREAM_TIMEOUT_S = 5.0  # what `wf es stop` used to wait before dying with a traceback


def wf(url: str, *argv: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "wf.cli", *argv], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "WF_NATS_URL": url, "WF_DEBUG": ""}, check=False)
    return done, time.monotonic() - started


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_an_emergency_stop_with_the_client_credential_fails_at_once_naming_the_operator_credential(system):
    done, took = wf(system.client_url, "es", "stop", "SleepDemo")
    line = one_line(done)
    assert line.startswith("wf: ") and "permissions violation" in line
    assert "emergency stops need the operator credential: use .wf/operator.env or WF_NATS_URL from it" in line
    assert took < JETSTREAM_TIMEOUT_S - 0.5, f"{took:.1f} s: it waited for the request's timeout"
    shown, _ = wf(system.operator_url, "es", "show")
    assert shown.returncode == 0 and "SleepDemo go" in shown.stdout.splitlines()  # nothing was stopped


def test_with_debug_the_violation_comes_with_its_traceback(system):
    done, _ = wf(system.client_url, "--debug", "es", "stop", "SleepDemo")
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr and "permissions violation" in done.stderr
    assert "emergency stops need the operator credential" in done.stderr.splitlines()[-1]


def test_the_operator_credential_may_stop_and_go(system):
    stopped, _ = wf(system.operator_url, "es", "stop", "SleepDemo")
    assert stopped.returncode == 0 and stopped.stdout == "SleepDemo stop\n", stopped.stderr
    went, _ = wf(system.operator_url, "es", "go", "SleepDemo")
    assert went.returncode == 0 and went.stdout == "SleepDemo go\n", went.stderr


def test_setup_with_the_client_credential_names_the_admin_credential(system):
    line = one_line(wf(system.client_url, "setup", "--config-dir", str(REPO / "configs"))[0])
    assert "`wf setup` needs the admin credential: use .wf/admin.env or WF_NATS_URL from it" in line


def test_a_wrong_password_is_one_line_that_shows_no_password(system):
    parsed = urlsplit(system.client_url)
    wrong = system.client_url.replace(f":{parsed.password}@", ":not-the-password@")
    done, took = wf(wrong, "submit", "examples/sleep.json")
    line = one_line(done)
    assert "refused the credential (authorization violation)" in line and "client.env" in line
    assert "not-the-password" not in line and parsed.password not in line
    assert took < 10
