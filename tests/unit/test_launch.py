"""wf/launch.py (the one way to start `wf up` and wait for it), wf/settings.py (the one reader of the
environment's WF_* settings in wf/) and the `wf approve`/`wf deny` pair of one function; no server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wf import launch, settings
from wf.commands.parser import build_parser
from wf.commands.workflows import cmd_decide


def test_a_wf_up_that_exits_is_not_waited_for(tmp_path: Path) -> None:
    up = launch.start(tmp_path / "data", "--no-such-flag", log_path=tmp_path / "wf-up.log", with_parent=False)
    started = time.monotonic()
    with pytest.raises(launch.NotReady, match="exited with 2 before it was ready"):
        up.wait_ready(30)
    assert time.monotonic() - started < 20
    assert "--no-such-flag" in up.log_tail()
    assert up.stop() == 2


def fake_up(tmp_path: Path, script: str) -> launch.Launched:
    """A stand-in for `wf up`: `script` in a Python process, with the launcher's stop and readiness."""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    return launch.Launched(proc, tmp_path, tmp_path / "log", 0)


def test_readiness_is_waited_for_with_a_deadline(tmp_path: Path) -> None:
    up = fake_up(tmp_path, "import time; time.sleep(60)")
    try:
        with pytest.raises(launch.NotReady, match="not ready within 0 s"):
            up.wait_ready(0.3)
    finally:
        assert up.stop(timeout_s=10) != 0  # SIGTERM


def test_ready_once_client_env_is_written(tmp_path: Path) -> None:
    script = ("import pathlib, time; time.sleep(0.2); "
              "pathlib.Path('client.env').write_text('WF_NATS_URL=nats://client:pw@127.0.0.1:1\\n'); time.sleep(60)")
    up = fake_up(tmp_path, script)
    try:
        asyncio.run(up.ready(20))
        assert up.url("client") == "nats://client:pw@127.0.0.1:1"
    finally:
        up.stop(timeout_s=10)
    assert up.proc.returncode is not None


def test_settings_are_read_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WF_NATS_URL", raising=False)
    assert settings.nats_url() is None
    monkeypatch.setenv("WF_NATS_URL", "nats://a:b@h:1")
    assert settings.nats_url() == "nats://a:b@h:1"
    monkeypatch.setenv("WF_DEBUG", "0")
    assert not settings.debug()
    monkeypatch.setenv("WF_DEBUG", "yes")
    assert settings.debug() and build_parser().parse_args(["ls"]).debug
    monkeypatch.setenv("WF_PEOPLE_STORE_BYTES", "not a number")
    assert settings.people_store_bytes() == settings.DEFAULT_PEOPLE_STORE_BYTES


def test_approve_and_deny_are_one_command() -> None:
    approve = build_parser().parse_args(["approve", "ID", "--comment", "ok"])
    deny = build_parser().parse_args(["deny", "ID", "--comment", "no"])
    assert approve.func is deny.func is cmd_decide
    assert (approve.decision, deny.decision) == ("approve", "deny")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["deny", "ID"])  # a denial says why
