"""Every `wf` command fails with one line, `wf: <cause>; <what to do>`, and no traceback unless --debug.

No NATS server here: the commands point at a loopback port where nothing listens. The cases that need a
real server (a permissions violation, a wrong password) are in tests/integration/test_cli_errors.py."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest

from wf import cli, client
from wf.failures import Failure, Guard, explain, redact
from wf.up import free_port

REPO = Path(__file__).resolve().parents[2]
SECRET = "pw-that-must-not-show"


def nowhere() -> str:
    """A URL of a loopback port where nothing listens (with a password, which no message may show)."""
    return f"nats://client:{SECRET}@127.0.0.1:{free_port()}"


def wf(*argv: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "wf.cli", *argv], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "WF_DEBUG": "", **(env or {})}, check=False)
    return done, time.monotonic() - started


def test_with_no_server_wf_submit_says_one_line_naming_wf_up_and_no_traceback():
    done, took = wf("submit", "examples/sleep.json", env={"WF_NATS_URL": nowhere()})
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("wf: cannot reach NATS at nats://client:***@127.0.0.1:")
    assert "wf up" in lines[0] and "WF_NATS_URL" in lines[0]
    assert "Traceback" not in done.stderr and SECRET not in done.stderr
    assert took < 20, f"{took:.1f} s: nats-py went on reconnecting"


@pytest.mark.parametrize("how", [("--debug", "submit", "examples/sleep.json"), ("submit", "examples/sleep.json", "--debug"),
                                 ("submit", "examples/sleep.json")])
def test_with_debug_the_traceback_is_shown_too(how):
    done, _ = wf(*how, env={"WF_NATS_URL": nowhere(), **({} if "--debug" in how else {"WF_DEBUG": "1"})})
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr
    assert "ConnectionRefusedError" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("wf: cannot reach NATS at ")  # the same line, last


COMMANDS = [
    ["submit", "examples/sleep.json"], ["exec", "01ID"], ["status", "01ID"], ["status", "01ID", "--watch"],
    ["cancel", "01ID"], ["ls"], ["es", "stop", "SleepDemo"], ["es", "show"], ["setup"], ["ping", "wf-intake"],
    ["erase-satellite", "aap"],
]


@pytest.fixture
def quiet_nats_logger():
    """cli.main stops the `nats` logger propagating (its errors go to the Guard): put it back after."""
    logger = logging.getLogger("nats")
    handlers, propagate = list(logger.handlers), logger.propagate
    yield
    logger.handlers[:], logger.propagate = handlers, propagate


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: " ".join(argv))
def test_every_command_that_connects_fails_in_one_line(argv, monkeypatch, capsys, quiet_nats_logger, tmp_path):
    monkeypatch.setenv("WF_NATS_URL", nowhere())
    monkeypatch.delenv("WF_DEBUG", raising=False)
    monkeypatch.chdir(REPO)
    code = cli.main(["--data-dir", str(tmp_path), *argv])
    out, err = capsys.readouterr()
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith("wf: cannot reach NATS at ") and "wf up" in err, err
    assert "Traceback" not in err and SECRET not in err + out


def test_a_missing_file_is_one_line_too(capsys, quiet_nats_logger):
    assert cli.main(["submit", str(REPO / "no-such-workreq.json")]) == 1
    err = capsys.readouterr().err
    assert err == f"wf: cannot use {REPO / 'no-such-workreq.json'} (no such file or directory); check the path\n"


VIOLATION = nats.errors.Error('nats: permissions violation for publish to "$js.api.stream.info.kv_wf_es"')


def test_a_permissions_violation_ends_the_command_at_once_naming_the_credential_it_needs():
    """nats-py reports the violation only to error_cb, and the request would wait for its timeout:
    the Guard cancels the command, and _run says which credential it needs."""
    waited = {}

    async def command(args: argparse.Namespace) -> int:
        guard = Guard("operator", "nats://client:x@127.0.0.1:4222", Path(".wf"), debug=False)
        args.guards = [guard]
        guard.connected = True
        await guard.error_cb(VIOLATION)  # as nats-py's read loop would, while the request waits
        started = time.monotonic()
        try:
            await asyncio.Event().wait()  # the request that would time out
        finally:
            waited["s"] = time.monotonic() - started
        return 0

    args = argparse.Namespace(func=command)
    with pytest.raises(Failure) as failure:
        asyncio.run(asyncio.wait_for(cli._run(args), timeout=5))
    assert waited["s"] < 1
    assert str(failure.value) == (
        "this credential may not publish to $js.api.stream.info.kv_wf_es (a permissions violation, says the NATS "
        "server); emergency stops need the operator credential: use .wf/operator.env or WF_NATS_URL from it")


async def test_errors_while_connecting_are_only_recorded_a_lost_connection_ends_the_command():
    async def command() -> Guard:
        guard = Guard("client", "nats://127.0.0.1:1", Path(".wf"), debug=False)
        await guard.error_cb(ConnectionRefusedError(111, "Connect call failed"))  # an attempt of nats.connect
        assert guard.fatal is None and isinstance(guard.last_error(), ConnectionRefusedError)
        guard.connected = True
        guards.append(guard)
        await guard.error_cb(nats.errors.UnexpectedEOF())
        await asyncio.Event().wait()  # cancelled by the guard
        return guard

    guards: list[Guard] = []
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.create_task(command()), timeout=5)
    assert "the connection to NATS at nats://127.0.0.1:1 was lost" in str(guards[0].fatal)


@pytest.mark.parametrize(("exc", "says"), [
    (client.Unreachable("no reply on wf.api.submit within 10 s; retry"), "no reply on wf.api.submit within 10 s; retry"),
    (nats.errors.TimeoutError(), "NATS did not answer in time; is `wf up`"),
    (nats.js.errors.ServiceUnavailableError(), "JetStream is not available on this NATS server; enable it"),
    (nats.js.errors.BucketNotFoundError(), "run `wf setup` against this server"),
    (nats.errors.ConnectionClosedError(), "the connection to NATS was lost (ConnectionClosedError); is `wf up` still"),
    (nats.errors.Error("nats: 'authorization violation'"), "refused the credential (authorization violation); use"),
    (ValueError("bad\nthing"), "unexpected ValueError: bad thing; run with --debug for the traceback"),
])
def test_each_kind_of_failure_is_one_line_with_a_cause_and_what_to_do(exc, says):
    line = explain(exc)
    assert says in line and "\n" not in line and "; " in line


def test_passwords_are_redacted_from_urls():
    assert redact("nats://client:secret@127.0.0.1:4222") == "nats://client:***@127.0.0.1:4222"
    assert redact("nats://a:b@h1:1, nats://h2:2") == "nats://a:***@h1:1,nats://h2:2"
    assert redact("tls://127.0.0.1:4222") == "tls://127.0.0.1:4222"
