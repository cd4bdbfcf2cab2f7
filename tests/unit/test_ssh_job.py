"""The `ssh` job's arguments and runner configuration, checked without any server (runs against a
real sshd are in tests/integration/test_ssh_job.py)."""

from __future__ import annotations

import pytest

from services.jobs import ArgError, JobContext, JobError
from services.jobs.ssh_cmd import SshJob, parse_args

BASE = {"host": "10.0.0.7", "user": "deploy", "command": "systemctl restart nginx"}


def args(**changes: str) -> dict[str, str]:
    return {**BASE, **changes}


def refused(jobs, arg: str, **changes: str) -> ArgError:
    with pytest.raises(ArgError) as err:
        jobs.validate("ssh", args(**changes))
    assert err.value.arg == arg, err.value.message
    assert len(err.value.message) < 300, "a long value is not echoed whole"
    return err.value


def test_ssh_is_registered_default_deny_behind_allow_hosts(jobs):
    job = jobs.get("ssh")
    assert job is not None and job.allowed_by == "allowHosts"
    assert job.mandatory_args == {"host", "user", "command"}
    assert job.optional_args == {"port", "timeout", "ok_codes", "attempts", "fatal"}
    assert job.max_attempts == 10 and job.retry_base_s == 1.0


def test_defaults(jobs):
    jobs.validate("ssh", BASE)
    parsed = parse_args(BASE)
    assert (parsed.port, parsed.timeout_s, parsed.ok_codes, parsed.attempts, parsed.fatal) == (22, 60, {0}, 3, False)


@pytest.mark.parametrize("host", [
    "10.0.0.7", "127.0.0.1", "::1", "fd00::7", "2001:db8::1", "web-1.example.net", "web-1.example.net.",
    "localhost", "aa01", "x", "a" * 63 + ".example", "1host.example", "host.123abc",
])
def test_host_may_be_an_address_a_machine_or_a_dns_name(jobs, host):
    jobs.validate("ssh", args(host=host))


@pytest.mark.parametrize("host", [
    "", " ", "10.0.0.7 ", "[::1]", "10.0.0.7:22", "user@host", "-oProxyCommand=x", "host_name.example", "a..b",
    ".example", "-web.example", "web-.example", "a" * 64 + ".example", ("a" * 60 + ".") * 5, "127.1", "127.0.0.300",
    "10.0.0", "host/path", "ho st", "h\u00f6st.example", "*.example", "host\n", "http://host",
])
def test_host_refuses_anything_else(jobs, host):
    refused(jobs, "host", host=host)


def test_host_refuses_a_site_of_the_inventory_it_is_many_machines(jobs):
    err = refused(jobs, "host", host="aaa")
    assert "is a site of the inventory" in err.message and "aa00" in err.message


def test_host_accepts_a_three_letter_dns_name_that_is_not_a_site(jobs):
    jobs.validate("ssh", args(host="zzz"))


@pytest.mark.parametrize("user", ["deploy", "root", "_svc", "a.b-c_d", "A1", "u" * 32])
def test_user_names(jobs, user):
    jobs.validate("ssh", args(user=user))


@pytest.mark.parametrize("user", ["", "-deploy", "1abc", "de ploy", "deploy@host", "u" * 33, "d\u00e9ploy", "a:b",
                                  "a/b", "root\n"])
def test_user_refuses_what_is_not_a_posix_user_name(jobs, user):
    refused(jobs, "user", user=user)


def test_command_bounds(jobs):
    jobs.validate("ssh", args(command="x" * 16 * 1024))
    jobs.validate("ssh", args(command="echo 'quotes' \"and\" $HOME; exit 0"))
    jobs.validate("ssh", args(command="secret:NAME"))  # plain text: not resolved, not refused
    assert "16,384" in refused(jobs, "command", command="x" * (16 * 1024 + 1)).message
    assert "16,384" in refused(jobs, "command", command="\u00e9" * (8 * 1024 + 1)).message  # bytes, not characters
    assert "NUL" in refused(jobs, "command", command="echo a\x00b").message
    refused(jobs, "command", command="")
    refused(jobs, "command", command=" \n\t")


@pytest.mark.parametrize(("arg", "good", "bad"), [
    ("port", ["1", "22", "2222", "65535"], ["0", "65536", "-1", "22.0", " 22", "ssh", ""]),
    ("timeout", ["1", "60", "86400"], ["0", "86401", "1.5", "-5", "1e3", ""]),
    ("attempts", ["1", "3", "10"], ["0", "11", "-1", "x", ""]),
    ("ok_codes", ["0", "0,3", "255", "1,2,3", ",".join(str(n) for n in range(32))],
     ["", "256", "-1", "0,", ",0", "0, 3", "0;3", "a", "0x1", ",".join("0" * 33), "1.0"]),
    ("fatal", ["true", "false"], ["True", "yes", "1", "", " true"]),
])
def test_optional_args_bounds(jobs, arg, good, bad):
    for value in good:
        jobs.validate("ssh", args(**{arg: value}))
    for value in bad:
        refused(jobs, arg, **{arg: value})


def test_max_attempts_for_is_the_attempts_arg(job_env):
    job = SshJob(job_env.inventory)
    assert job.max_attempts_for(BASE) == 3
    assert job.max_attempts_for(args(attempts="1")) == 1
    assert job.max_attempts_for(args(attempts="10")) == 10


def ctx(attempt: int = 1) -> JobContext:
    return JobContext(workflow_id="W", block=0, job=0, attempt=attempt, time_scale=1.0)


async def test_without_the_runners_key_or_known_hosts_nothing_is_tried_and_nothing_retried(job_env, tmp_path):
    key = tmp_path / "key"
    key.write_text("not a key\n")
    cases = [
        ({}, "set WF_SSH_KEY"),
        ({"WF_SSH_KEY": str(key)}, "set WF_SSH_KNOWN_HOSTS"),
        ({"WF_SSH_KEY": str(tmp_path / "missing"), "WF_SSH_KNOWN_HOSTS": str(tmp_path / "kh")}, "is unusable"),
        ({"WF_SSH_KEY": str(key), "WF_SSH_KNOWN_HOSTS": str(tmp_path / "kh")}, "is unusable"),
    ]
    for environ, expected in cases:
        with pytest.raises(JobError) as err:
            await SshJob(job_env.inventory, environ=environ).run(BASE, ctx())
        assert expected in err.value.message and not err.value.retryable, err.value.message


async def test_a_missing_known_hosts_file_is_refused_naming_the_host(job_env, tmp_path):
    import subprocess

    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    environ = {"WF_SSH_KEY": str(key), "WF_SSH_KNOWN_HOSTS": str(tmp_path / "missing_known_hosts")}
    with pytest.raises(JobError) as err:
        await SshJob(job_env.inventory, environ=environ).run(BASE, ctx())
    assert "missing_known_hosts" in err.value.message and "10.0.0.7:22" in err.value.message
    assert not err.value.retryable
