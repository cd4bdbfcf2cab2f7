"""Attacks on the real-work jobs (exec, ssh, http) that need no running system: what decide() lets
through for a client who knows the policies, and what the output's redaction lets out.

An attack that gets through is written as the safe behaviour and marked xfail(strict=True), so the
lead sees it; the others stay as regression tests that the defence holds."""

from __future__ import annotations

import json

import pytest

from schemas import WorkReq, workreq_decoder
from services.jobs import JobRegistry
from services.jobs.output import FULL_BYTES, Output, Secrets
from services.policy.decide import decide
from services.policy.registry import PolicyRegistry, builtin_policies, parse_policy_config

NAME = "Ops"


def job(name: str, **args: str) -> dict:
    return {"name": name, "args": args}


def exec_job(*argv: str, **extra: str) -> dict:
    return job("exec", argv=json.dumps(list(argv)), **extra)


def workreq(*jobs: dict) -> WorkReq:
    return workreq_decoder.decode(json.dumps({"name": NAME, "blocks": [{"jobs": list(jobs)}]}).encode())


async def verdict(jobs: JobRegistry, policy: dict, *use: dict) -> str | None:
    cfg = parse_policy_config(json.dumps({"Name": NAME, "Policies": [policy]}), PolicyRegistry(builtin_policies()), jobs)
    return await decide(workreq(*use), jobs, cfg)


def commands(*entries: dict) -> dict:
    return {"Name": "allowCommands", "Settings": {"Commands": list(entries)}}


def urls(*prefixes: str) -> dict:
    return {"Name": "allowUrls", "Settings": {"Prefixes": list(prefixes)}}


def hosts(*names: str) -> dict:
    return {"Name": "allowHosts", "Settings": {"Hosts": list(names)}}


# ---------------------------------------------------------------- secrets used where not allowed

async def test_an_allowed_env_name_does_not_carry_any_secret(jobs):
    """Held since allowCommands' `Secrets`: an env value `secret:NAME` needs NAME listed (none by default)."""
    policy = commands({"Program": "/bin/sh", "Args": ["-c", "*"], "Env": ["MODE"]})
    use = exec_job("/bin/sh", "-c", 'printf %s "$MODE" | rev', env='{"MODE": "secret:DB_PASSWORD"}')
    reason = await verdict(jobs, policy, use)
    assert reason is not None and "'DB_PASSWORD' not allowed" in reason
    listed = commands({"Program": "/bin/sh", "Args": ["-c", "*"], "Env": ["MODE"], "Secrets": ["MODE_*"]})
    assert await verdict(jobs, listed, use) is not None
    assert await verdict(jobs, listed, exec_job("/bin/sh", "-c", "x", env='{"MODE": "secret:MODE_KEY"}')) is None


async def test_star_never_passes_a_secret_in_argv(jobs):
    """Holds: `*` and ["*"] never match a `secret:NAME` argument."""
    for entry in ({"Program": "/bin/sh", "Args": ["-c", "*", "*"]}, {"Program": "/bin/sh", "Args": ["*"]}):
        reason = await verdict(jobs, commands(entry), exec_job("/bin/sh", "-c", "echo $1", "secret:DB_PASSWORD"))
        assert reason is not None and "not allowed" in reason


async def test_an_allowed_url_does_not_receive_any_secret(jobs):
    policy = urls("https://status.example/")
    use = job("http", method="POST", url="https://status.example/hook",
              headers=json.dumps({"X-Note": "secret:DB_PASSWORD"}))
    reason = await verdict(jobs, policy, use)
    assert reason is not None and "'DB_PASSWORD' not allowed" in reason
    body = job("http", method="POST", url="https://status.example/hook", body="secret:DB_PASSWORD")
    assert await verdict(jobs, policy, body) is not None
    listed = {"Name": "allowUrls", "Settings": {"Prefixes": ["https://status.example/"], "Secrets": ["STATUS_*"]}}
    assert await verdict(jobs, listed, use) is not None
    ok = job("http", method="POST", url="https://status.example/hook", headers=json.dumps({"X-Note": "secret:STATUS_KEY"}))
    assert await verdict(jobs, listed, ok) is None


# ---------------------------------------------------------------- exec: what the policy does not see

async def test_cwd_is_part_of_what_is_allowed(jobs):
    policy = commands({"Program": "/bin/sh", "Args": ["scripts/restart.sh"]})
    use = exec_job("/bin/sh", "scripts/restart.sh", cwd="/tmp/uploads/evil")
    assert await verdict(jobs, policy, use) is not None
    listed = commands({"Program": "/bin/sh", "Args": ["scripts/restart.sh"], "Cwd": ["/srv/app"]})
    assert await verdict(jobs, listed, use) is not None
    assert await verdict(jobs, listed, exec_job("/bin/sh", "scripts/restart.sh", cwd="/srv/app")) is None


@pytest.mark.parametrize("argv0", ["/bin/../bin/echo", "/bin//echo", "/bin/./echo", "/usr/bin/echo", "/bin/echo/"])
async def test_program_path_tricks_are_refused(jobs, argv0):
    reason = await verdict(jobs, commands({"Program": "/bin/echo", "Args": ["*"]}), exec_job(argv0, "hi"))
    assert reason is not None


# ---------------------------------------------------------------- allowUrls / allowHosts: bypass attempts that hold

@pytest.mark.parametrize("url", [
    "https://deploy.example.evil.com/",
    "https://deploy.example@evil.com/",
    "https://evil.com#@deploy.example/",
    "https://evil.com\\@deploy.example/",
    "https://deploy.example:8443/api",
    "https://deploy.example/apix",
    "https://deploy.example/api/../admin",
    "https://deploy.example/api/%2e%2e/admin",
    "https://deploy.example/api/..;/admin",
    "https://deploy.example/api/%2fadmin",
    "https://deploy.example/api\t/x",
    "http://deploy.example/api",
    "https://DEPLOY.example./api",
    "https://deploy.example:0443x/api",
    "https://[::ffff:deploy.example]/api",
])
async def test_url_bypasses_are_refused(jobs, url):
    assert await verdict(jobs, urls("https://deploy.example/api"), job("http", method="GET", url=url)) is not None


@pytest.mark.parametrize("host", ["127.1", "0x0a000007", "10.0.0.07", "167772167", "10.0.0.7.", "0x0a.0.0.7",
                                  "fe80::1%eth0", "10.0.0.8", "evil.prod.example.com", "localhost"])
async def test_host_bypasses_are_refused(jobs, host):
    use = job("ssh", host=host, user="ops", command="uptime")
    assert await verdict(jobs, hosts("10.0.0.7", "*.prod.example"), use) is not None


async def test_allow_hosts_does_not_let_any_user_log_in(jobs):
    """Held since allowHosts' `Users` and `Ports` (optional: `Hosts` alone still allows any user and port)."""
    policy = {"Name": "allowHosts", "Settings": {"Hosts": ["10.0.0.7"], "Users": ["deploy"], "Ports": [22]}}
    use = job("ssh", host="10.0.0.7", user="root", command="cat /etc/shadow", port="2222")
    assert await verdict(jobs, policy, use) is not None
    assert await verdict(jobs, policy, job("ssh", host="10.0.0.7", user="root", command="id")) is not None
    assert await verdict(jobs, policy, job("ssh", host="10.0.0.7", user="deploy", command="id", port="2222")) is not None
    assert await verdict(jobs, policy, job("ssh", host="10.0.0.7", user="deploy", command="id")) is None


# ---------------------------------------------------------------- the output's redaction

SECRET = "A" * 20 + "B" * 20 + "C" * 24  # 64 characters, a token's usual size


def test_a_secret_cut_by_the_drop_is_not_shown_in_part():
    out = Output(Secrets(environ={"T": SECRET}))
    limit = FULL_BYTES + len(SECRET) + 4
    tail = SECRET * 4  # each copy shrinks by 54 bytes once redacted
    body = SECRET + "x" * (limit - len(SECRET) - len(tail) + 30) + tail  # the cut lands 30 bytes into the first copy
    out.write("y" * 1000)
    out.write(body)
    assert out.dropped > 0
    full = out.full()
    assert SECRET[30:] not in full  # 34 characters of the token
    assert "CCCCCCCCCCCC" not in full


def test_a_secret_split_across_writes_is_redacted():
    """Holds: a secret arriving in several chunks is found when read."""
    out = Output(Secrets(environ={"T": SECRET}))
    for i in range(0, len(SECRET), 7):
        out.write(SECRET[i:i + 7].encode())
    assert SECRET not in out.full() and SECRET not in out.tail() and "[secret:T]" in out.tail()


def test_a_huge_output_is_bounded():
    out = Output(Secrets(environ={"T": SECRET}))
    chunk = b"\x00\x1b[31m\xff\xfe" * 10_000
    for _ in range(200):
        out.write(chunk)
    assert len(out.full().encode()) <= FULL_BYTES + 200
    assert len(out.tail().encode()) <= 4096


def test_a_json_escaped_secret_is_redacted():
    secret = 'pa"ss\\word-99'
    out = Output(Secrets(environ={"Q": secret}))
    out.write(json.dumps({"headers": {"X-Probe": secret}}))
    assert json.loads(out.full().split("\n")[-1])["headers"]["X-Probe"] != secret
