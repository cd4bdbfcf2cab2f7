"""The `exec` job: its args checked, real programs run, their output captured and redacted, and on a
timeout, a cancel or an emergency stop nothing it started left running (grandchildren included)."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from services.jobs import ArgError, JobContext, JobError
from services.jobs.exec_cmd import ExecJob, parse_argv
from services.jobs.output import Output, Secrets
from tests.procs import alive, in_session

SECRET = "s3cr3t-Value-42"


def make_ctx(secrets: Secrets | None = None) -> JobContext:
    secrets = secrets or Secrets(environ={"TOKEN": SECRET})
    return JobContext(workflow_id="WF1", block=0, job=0, attempt=1, time_scale=1.0, output=Output(secrets), secrets=secrets)


def sh(script: str, *extra: str) -> str:
    return json.dumps(["/bin/sh", "-c", script, "sh", *extra])


def assert_all_gone(pids: list[int], within_s: float = 3.0) -> None:
    deadline = time.monotonic() + within_s
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            pytest.fail(f"still running after {within_s} s: {[p for p in pids if alive(p)]}")
        time.sleep(0.02)


async def pids_printed(ctx: JobContext, count: int, within_s: float = 10.0) -> list[int]:
    """The pids the command prints, one per line, once `count` of them have arrived."""
    deadline = time.monotonic() + within_s
    while True:
        pids = [int(line.split("=")[1]) for line in ctx.output.tail().splitlines() if line.startswith("pid=")]
        if len(pids) >= count:
            return pids
        if time.monotonic() > deadline:
            pytest.fail(f"the command printed {pids}, expected {count} pids:\n{ctx.output.tail()}")
        await asyncio.sleep(0.02)


# a tree: sh (leader) -> sleep; sh -> sh -> sleep (a grandchild); a python grandchild that moves to a
# process group of its own (same session) and ignores SIGTERM
TREE = """
echo pid=$$
sleep 300 &
echo pid=$!
sh -c 'sleep 300 & echo pid=$!; wait' &
echo pid=$!
"$1" -c 'import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); os.setpgid(0, 0); print("pid=%d" % os.getpid(), flush=True); time.sleep(300)' &
wait
"""
TREE_PIDS = 5


# ------------------------------------------------------------ validation

def valid(**extra: str) -> dict[str, str]:
    return {"argv": '["/bin/echo", "hi"]', **extra}


def test_valid_args_pass(jobs):
    jobs.validate("exec", valid())
    jobs.validate("exec", {
        "argv": json.dumps(["/usr/bin/curl", "-H", "secret:api_token", "https://x/"]), "timeout": "86400",
        "ok_codes": "0,3, 255", "cwd": "/tmp", "env": json.dumps({"MODE": "fast", "TOKEN_2": "secret:tok.en-1", "_X": ""}),
        "attempts": "10", "fatal": "true"})
    jobs.validate("exec", valid(timeout="1", attempts="1", fatal="false", ok_codes="0"))


@pytest.mark.parametrize(("args", "arg", "words"), [
    ({"argv": "/bin/echo hi"}, "argv", "JSON list"),
    ({"argv": "[]"}, "argv", "non-empty"),
    ({"argv": '"/bin/echo"'}, "argv", "non-empty"),
    ({"argv": '["/bin/echo", 3]'}, "argv", "strings"),
    ({"argv": '["echo", "hi"]'}, "argv", "absolute path"),
    ({"argv": '["secret:PROG"]'}, "argv", "absolute path"),
    ({"argv": json.dumps(["/bin/echo"] * 257)}, "argv", "at most 256"),
    ({"argv": json.dumps(["/bin/echo", "a\x00b"])}, "argv", "NUL"),
    ({"argv": json.dumps(["/bin/echo", "secret:"])}, "argv", "not a secret's name"),
    ({"argv": json.dumps(["/bin/echo", "secret:bad name"])}, "argv", "not a secret's name"),
    (valid(timeout="0"), "timeout", "from 1 to 86,400"),
    (valid(timeout="86401"), "timeout", "from 1 to 86,400"),
    (valid(timeout="1.5"), "timeout", "plain digits"),
    (valid(timeout="-5"), "timeout", "plain digits"),
    (valid(timeout=""), "timeout", "plain digits"),
    (valid(ok_codes="256"), "ok_codes", "from 0 to 255"),
    (valid(ok_codes="0,"), "ok_codes", "plain digits"),
    (valid(ok_codes="-1"), "ok_codes", "plain digits"),
    (valid(ok_codes="0;1"), "ok_codes", "plain digits"),
    (valid(ok_codes=""), "ok_codes", "plain digits"),
    (valid(cwd="tmp"), "cwd", "absolute path"),
    (valid(cwd=""), "cwd", "absolute path"),
    (valid(env="MODE=fast"), "env", "JSON object"),
    (valid(env='["MODE"]'), "env", "JSON object"),
    (valid(env='{"MODE": 1}'), "env", "strings"),
    (valid(env='{"mode": "x"}'), "env", "[A-Z_][A-Z0-9_]*"),
    (valid(env='{"1X": "x"}'), "env", "[A-Z_][A-Z0-9_]*"),
    (valid(env='{"A-B": "x"}'), "env", "[A-Z_][A-Z0-9_]*"),
    (valid(env='{"": "x"}'), "env", "[A-Z_][A-Z0-9_]*"),
    (valid(env='{"X": "secret:no spaces"}'), "env", "not a secret's name"),
    (valid(env=json.dumps({f"V{i}": "x" for i in range(65)})), "env", "at most 64"),
    (valid(attempts="0"), "attempts", "from 1 to 10"),
    (valid(attempts="11"), "attempts", "from 1 to 10"),
    (valid(fatal="yes"), "fatal", '"true" or "false"'),
    (valid(fatal="True"), "fatal", '"true" or "false"'),
    (valid(shell="true"), "shell", "unknown argument"),
])
def test_bad_args_are_refused_naming_the_argument(jobs, args, arg, words):
    with pytest.raises(ArgError) as err:
        jobs.validate("exec", args)
    assert err.value.arg == arg
    assert words in err.value.message


def test_parse_argv_returns_the_list_as_given():
    assert parse_argv('["/bin/echo", "secret:X", "$HOME", "a b"]') == ["/bin/echo", "secret:X", "$HOME", "a b"]


def test_attempts_bound_retries_and_only_up_to_ten():
    job = ExecJob()
    assert job.max_attempts == 10 and job.retry_base_s == 1.0
    assert job.max_attempts_for(valid()) == 1
    assert job.max_attempts_for(valid(attempts="4")) == 4


# ------------------------------------------------------------ running real programs

async def test_success_captures_stdout_and_stderr():
    ctx = make_ctx()
    with structlog.testing.capture_logs() as logs:
        await ExecJob().run({"argv": sh("echo out; echo err >&2; printf 'no newline'")}, ctx)
    text = ctx.output.tail()
    # two pipes, read as they come: each one's order is kept, not the order between them
    assert "out\nno newline" in text and "err\n" in text and len(text) == len("out\nno newlineerr\n")
    ended = [e for e in logs if e["event"] == "exec_ended"]
    assert ended and ended[0]["program"] == "/bin/sh" and ended[0]["exit_code"] == 0


async def test_a_failure_names_the_exit_code_and_the_last_line():
    ctx = make_ctx()
    with pytest.raises(JobError) as err:
        await ExecJob().run({"argv": sh("echo starting; echo 'disk full' >&2; exit 3")}, ctx)
    assert err.value.message == "exited with code 3: disk full"
    assert not err.value.retryable and not err.value.fatal
    with pytest.raises(JobError) as err:
        await ExecJob().run({"argv": sh("exit 1"), "fatal": "true"}, make_ctx())
    assert err.value.message == "exited with code 1" and err.value.fatal and not err.value.retryable


async def test_ok_codes_are_success():
    await ExecJob().run({"argv": sh("exit 3"), "ok_codes": "0,3"}, make_ctx())
    await ExecJob().run({"argv": sh("exit 0"), "ok_codes": "0,3"}, make_ctx())
    with pytest.raises(JobError, match="exited with code 0"):
        await ExecJob().run({"argv": sh("exit 0"), "ok_codes": "1"}, make_ctx())


async def test_killed_by_a_signal_says_which():
    with pytest.raises(JobError) as err:
        await ExecJob().run({"argv": sh("echo bye; kill -USR1 $$")}, make_ctx())
    assert err.value.message == "killed by signal SIGUSR1: bye" and not err.value.retryable


async def test_the_environment_is_not_inherited(monkeypatch):
    monkeypatch.setenv("WF_NATS_PASSWORD_LEAK", "hunter2")
    monkeypatch.setenv("WF_SECRET_TOKEN", SECRET)
    ctx = make_ctx()
    # a job's own WF_EXEC_ID never replaces the runner's marker
    await ExecJob().run({"argv": '["/usr/bin/env"]', "env": '{"MODE": "fast", "LANG": "C", "WF_EXEC_ID": "x"}'}, ctx)
    lines = sorted(ctx.output.tail().splitlines())
    assert lines[:3] == ["LANG=C", "MODE=fast", "PATH=/usr/local/bin:/usr/bin:/bin"]
    assert re.fullmatch(r"WF_EXEC_ID=WF1\.0\.0\.1-[0-9a-f]{16}", lines[3]) and len(lines) == 4
    ctx = make_ctx()
    await ExecJob().run({"argv": '["/usr/bin/env"]'}, ctx)
    lines = sorted(ctx.output.tail().splitlines())
    assert lines[:2] == ["LANG=C.UTF-8", "PATH=/usr/local/bin:/usr/bin:/bin"]
    assert lines[2].startswith("WF_EXEC_ID=WF1.0.0.1-") and len(lines) == 3


async def test_cwd_is_used(tmp_path):
    ctx = make_ctx()
    await ExecJob().run({"argv": '["/bin/pwd"]', "cwd": str(tmp_path)}, ctx)
    assert ctx.output.tail().strip() == str(tmp_path)


async def test_a_secret_is_resolved_but_redacted_in_output_error_and_logs():
    ctx = make_ctx()
    with structlog.testing.capture_logs() as logs, pytest.raises(JobError) as err:
        await ExecJob().run({"argv": sh('echo "token=$1"; echo "env=$TOK" >&2; exit 4', "secret:TOKEN"),
                             "env": '{"TOK": "secret:TOKEN"}'}, ctx)
    assert "token=[secret:TOKEN]" in ctx.output.tail() and "env=[secret:TOKEN]" in ctx.output.tail()
    assert SECRET not in ctx.output.tail() and SECRET not in ctx.output.full()
    assert err.value.message == "exited with code 4: env=[secret:TOKEN]"
    assert SECRET not in repr(logs) and "secret:TOKEN" not in repr(logs)
    # the program did get the value
    ctx = make_ctx()
    await ExecJob().run({"argv": sh('[ "$1" = "$2" ] && echo same', "secret:TOKEN", SECRET)}, ctx)
    assert ctx.output.tail().strip() == "same"


async def test_a_secret_not_set_on_the_runner_fails_without_running():
    with pytest.raises(JobError) as err:
        await ExecJob().run({"argv": sh("touch /tmp/should-not-run-$$", "secret:MISSING")}, make_ctx())
    assert "'MISSING' is not set on this runner" in err.value.message and not err.value.retryable


async def test_a_program_not_found_not_executable_or_a_cwd_missing(tmp_path):
    with pytest.raises(JobError) as err:
        await ExecJob().run({"argv": '["/no/such/program"]'}, make_ctx())
    assert err.value.message == "cannot run /no/such/program: no such program" and not err.value.retryable
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(JobError) as err:
        await ExecJob().run({"argv": json.dumps([str(script)])}, make_ctx())
    assert "permission denied" in err.value.message and not err.value.retryable
    with pytest.raises(JobError) as err:
        await ExecJob().run({"argv": '["/bin/true"]', "cwd": str(tmp_path / "missing")}, make_ctx())
    assert "does not exist" in err.value.message and str(tmp_path / "missing") in err.value.message


async def test_a_huge_output_on_both_pipes_does_not_deadlock_and_is_bounded():
    ctx = make_ctx()
    script = "head -c 3000000 /dev/zero | tr '\\0' o; head -c 3000000 /dev/zero | tr '\\0' e >&2; echo; echo last"
    await asyncio.wait_for(ExecJob().run({"argv": sh(script)}, ctx), 60)
    assert ctx.output.total == 6_000_006
    assert ctx.output.tail().endswith("e\nlast\n")
    assert len(ctx.output.full()) < 300_000


async def test_a_timeout_kills_the_whole_group_even_what_ignores_sigterm():
    ctx = make_ctx()
    job = asyncio.ensure_future(ExecJob().run({"argv": sh(TREE, sys.executable), "timeout": "1", "fatal": "true"}, ctx))
    pids = await pids_printed(ctx, TREE_PIDS)
    started = time.monotonic()
    with pytest.raises(JobError) as err:
        await job
    assert err.value.message == "timed out after 1 s" and err.value.retryable and err.value.fatal
    assert time.monotonic() - started < 8
    assert_all_gone(pids)
    assert in_session(pids[0]) == []


async def test_a_cancel_kills_the_whole_tree_at_once():
    ctx = make_ctx()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.ensure_future(ExecJob().run({"argv": sh(TREE, sys.executable), "timeout": "600"}, ctx))
        pids = await pids_printed(ctx, TREE_PIDS)
        assert all(alive(p) for p in pids)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # at once: SIGKILL, not the SIGTERM grace (the python grandchild ignores SIGTERM)
    assert time.monotonic() - started < 1.5
    assert [p for p in pids if alive(p)] == [], "killed before the cancel returned"
    assert_all_gone(pids)
    assert in_session(pids[0]) == []
    assert any(e["event"] == "exec_cancelled" for e in logs)


async def test_what_it_left_running_after_it_exits_is_ended():
    ctx = make_ctx()
    started = time.monotonic()
    await ExecJob().run({"argv": sh("sleep 300 >/dev/null 2>&1 & echo pid=$!; echo pid=$$")}, ctx)
    assert time.monotonic() - started < 5
    assert_all_gone(await pids_printed(ctx, 2))


def test_the_runner_gives_each_use_its_own_attempts():
    from services.jobrunner.verdict import max_attempts

    assert max_attempts(ExecJob(), valid()) == 1
    assert max_attempts(ExecJob(), valid(attempts="3")) == 3


# ------------------------------------------------------------ children that leave the session

async def test_a_program_that_exited_is_not_held_by_a_setsid_child_holding_its_pipes():
    """The exit decides, not the pipes: a setsid child keeping stdout open neither makes the job time
    out nor outlives it."""
    ctx = make_ctx()
    started = time.monotonic()
    await ExecJob().run({"argv": sh("setsid sleep 300 & echo pid=$!; echo done"), "timeout": "10"}, ctx)
    assert time.monotonic() - started < 5
    assert "done" in ctx.output.tail()
    assert_all_gone(await pids_printed(ctx, 1))


async def test_a_daemon_that_double_forks_is_ended_with_the_job():
    ctx = make_ctx()
    script = "(setsid sh -c 'sleep 300 & echo pid=$!' &); sleep 0.2; echo bye"
    await ExecJob().run({"argv": sh(script)}, ctx)
    assert_all_gone(await pids_printed(ctx, 1))


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_cancel_or_timeout_ends_setsid_children(how):
    ctx = make_ctx()
    args = {"argv": sh("setsid sleep 300 & echo pid=$!; setsid -f sleep 301; echo pid=$(pgrep -n -f 'sleep 301'); "
                       "sleep 300"), "timeout": "1" if how == "timeout" else "600"}
    task = asyncio.ensure_future(ExecJob().run(args, ctx))
    pids = await pids_printed(ctx, 2)
    assert all(alive(p) for p in pids)
    if how == "cancel":
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(JobError, match="timed out after 1 s"):
            await task
    assert_all_gone(pids)


async def test_a_process_of_another_job_is_left_alone():
    """Only what carries this run's marker: a setsid process of a job still running is untouched."""
    other = make_ctx()
    other_task = asyncio.ensure_future(ExecJob().run({"argv": sh("setsid sleep 300 & echo pid=$!; wait"),
                                                      "timeout": "600"}, other))
    try:
        (other_pid,) = await pids_printed(other, 1)
        ctx = make_ctx()
        await ExecJob().run({"argv": sh("setsid sleep 300 & echo pid=$!")}, ctx)
        assert_all_gone(await pids_printed(ctx, 1))
        assert alive(other_pid)
    finally:
        other_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await other_task
    assert_all_gone([other_pid])


# ------------------------------------------------------------ WF_EXEC_USER

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switching the user needs root")


@root_only
async def test_wf_exec_user_runs_the_program_as_that_user():
    nobody = pwd.getpwnam("nobody")
    ctx = make_ctx()
    await ExecJob(environ={"WF_EXEC_USER": "nobody"}).run({"argv": sh("id -u; id -g; id -G")}, ctx)
    uid, gid, groups = ctx.output.tail().splitlines()
    assert int(uid) == nobody.pw_uid and int(gid) == nobody.pw_gid
    assert sorted(int(g) for g in groups.split()) == sorted(os.getgrouplist("nobody", nobody.pw_gid))
    # by uid too; and the environment is still only ours
    ctx = make_ctx()
    await ExecJob(environ={"WF_EXEC_USER": str(nobody.pw_uid)}).run({"argv": '["/usr/bin/env"]'}, ctx)
    assert sorted(line.split("=")[0] for line in ctx.output.tail().splitlines()) == ["LANG", "PATH", "WF_EXEC_ID"]


@root_only
async def test_wf_exec_user_cannot_read_the_runners_environment(monkeypatch):
    ctx = make_ctx()
    with pytest.raises(JobError) as err:
        await ExecJob(environ={"WF_EXEC_USER": "nobody"}).run(
            {"argv": json.dumps(["/bin/cat", f"/proc/{os.getpid()}/environ", "/proc/1/environ"])}, ctx)
    assert "Permission denied" in err.value.message


@root_only
async def test_wf_exec_user_kills_setsid_children_too():
    ctx = make_ctx()
    await ExecJob(environ={"WF_EXEC_USER": "nobody"}).run({"argv": sh("setsid sleep 300 & echo pid=$!; echo done")},
                                                          ctx)
    assert_all_gone(await pids_printed(ctx, 1))


async def test_an_unknown_wf_exec_user_fails_clearly():
    with pytest.raises(JobError) as err:
        await ExecJob(environ={"WF_EXEC_USER": "no-such-user-wf"}).run({"argv": '["/bin/true"]'}, make_ctx())
    assert err.value.message == "cannot run /bin/true: WF_EXEC_USER='no-such-user-wf' is not a user on this runner"
    assert not err.value.retryable


SYSTEM_PYTHON = Path("/usr/bin/python3.11")
as_nobody = pytest.mark.skipif(os.geteuid() != 0 or not SYSTEM_PYTHON.exists() or sys.version_info[:2] != (3, 11),
                               reason="needs root and a python 3.11 that user nobody can run")


def run_as_nobody(code: str, **env: str) -> subprocess.Popen:
    """`code` run by python as user nobody, importing this repository (a runner that is not root)."""
    repo = Path(__file__).resolve().parents[2]
    site = repo / ".venv/lib/python3.11/site-packages"
    return subprocess.Popen([str(SYSTEM_PYTHON), "-c", code], user="nobody", group="nogroup", extra_groups=[],
                            cwd="/", env={"PYTHONPATH": f"{repo}:{site}", "PYTHONDONTWRITEBYTECODE": "1", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@as_nobody
def test_a_runner_that_cannot_switch_user_fails_the_job_clearly():
    code = ("import asyncio, json, os, tempfile\n"
            "if not os.access(os.devnull, os.R_OK | os.W_OK):  # a sandbox whose /dev/null is root's only\n"
            "    os.devnull = tempfile.mkstemp()[1]\n"
            "    import atexit; atexit.register(os.unlink, os.devnull)\n"
            "from services.jobs import JobError, JobContext\n"
            "from services.jobs.exec_cmd import ExecJob\n"
            "ctx = JobContext(workflow_id='W', block=0, job=0, attempt=1, time_scale=1.0)\n"
            "try:\n"
            "    asyncio.run(ExecJob(environ={'WF_EXEC_USER': 'root'}).run({'argv': '[\"/bin/true\"]'}, ctx))\n"
            "except JobError as exc:\n"
            "    print('RESULT', json.dumps([exc.message, exc.retryable]))\n")
    out, err = run_as_nobody(code).communicate(timeout=60)
    results = [line[len("RESULT "):] for line in out.splitlines() if line.startswith("RESULT ")]
    assert results, (out, err)
    message, retryable = json.loads(results[0])
    assert message.startswith("cannot run /bin/true as WF_EXEC_USER root: the runner cannot switch to that user")
    assert not retryable


@as_nobody
def test_not_dumpable_hides_a_non_root_runners_environment_from_its_own_user():
    """A runner not run as root, without WF_EXEC_USER: its programs have its uid; prctl(PR_SET_DUMPABLE, 0)
    (what the runner does at start) is what keeps them out of /proc/<runner>/environ and ptrace."""
    code = ("import sys, time\n"
            "from services.jobrunner.service import harden_process\n"
            "if sys.argv[1:] == ['harden']: harden_process()\n"
            "print('ready', flush=True); time.sleep(60)\n")
    for harden, readable in ((False, True), (True, False)):
        runner = run_as_nobody(code.replace("sys.argv[1:]", repr(["harden"] if harden else [])),
                               WF_SECRET_X="Dumpable-s3cr3t")
        try:
            assert runner.stdout.readline().strip() == "ready", runner.stderr.read()
            peek = subprocess.run(["/bin/cat", f"/proc/{runner.pid}/environ"], user="nobody", group="nogroup",
                                  extra_groups=[], capture_output=True, cwd="/")
            assert ("Dumpable-s3cr3t" in peek.stdout.decode(errors="replace")) is readable, peek
        finally:
            runner.kill()
            runner.wait()


def test_the_runner_scrubs_its_credentials_from_its_environment():
    from services.jobrunner.service import scrub_environ

    environ = {"WF_NATS_URL": "nats://runner:pw@h:4222", "WF_SECRETS_FILE": "/etc/wf/secrets.json",
               "WF_SECRET_TOKEN": SECRET, "WF_SSH_KEY": "/etc/wf/key", "PATH": "/bin", "WF_EXEC_USER": "nobody"}
    assert sorted(scrub_environ(environ)) == ["WF_NATS_URL", "WF_SECRETS_FILE", "WF_SECRET_TOKEN"]
    assert environ == {"WF_SSH_KEY": "/etc/wf/key", "PATH": "/bin", "WF_EXEC_USER": "nobody"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_the_runner_makes_itself_not_dumpable():
    code = ("import ctypes; from services.jobrunner.service import harden_process; "
            "libc = ctypes.CDLL(None); before = libc.prctl(3, 0, 0, 0, 0); done = harden_process(); "
            "print(before, done, libc.prctl(3, 0, 0, 0, 0))")  # 3: PR_GET_DUMPABLE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out == ["1", "True", "0"]


@pytest.mark.parametrize("environ", [{}, {"WF_EXEC_USER": "nobody"}], ids=["runner-user", "nobody"])
async def test_a_program_dies_with_its_runner(environ):
    """PR_SET_PDEATHSIG is SIGKILL in the program, after the switch of user: a runner killed mid-job
    (kill -9, OOM) leaves no program running while its command goes to another runner."""
    ctx = make_ctx()
    probe = "import ctypes; v = ctypes.c_int(); ctypes.CDLL('libc.so.6').prctl(2, ctypes.byref(v)); print(v.value)"
    await ExecJob(environ=environ).run({"argv": json.dumps(["/usr/bin/python3", "-c", probe]), "cwd": "/"}, ctx)
    assert ctx.output.tail().strip() == str(int(signal.SIGKILL))
