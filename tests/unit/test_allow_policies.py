"""allowCommands, allowHosts, allowUrls and default-deny, tried as an attacker would: every job that
needs an allow policy is refused unless its WorkReq name's policies allow that very use of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas import WorkReq, workreq_decoder
from services.inventory import InventorySource
from services.jobs import JobRegistry, builtin_jobs
from services.policy.decide import decide
from services.policy.registry import (
    ConfigError,
    PolicyConfig,
    PolicyRegistry,
    PolicyViolation,
    builtin_policies,
    parse_policy_config,
)

NAME = "Ops"


def job(name: str, **args: str) -> dict:
    return {"name": name, "args": args}


def exec_job(*argv: str, **extra: str) -> dict:
    return job("exec", argv=json.dumps(list(argv)), **extra)


def ssh_job(host: str) -> dict:
    return job("ssh", host=host, user="ops", command="uptime")


def http_job(url: str) -> dict:
    return job("http", method="GET", url=url)


def workreq(*blocks: list[dict], name: str = NAME) -> WorkReq:
    return workreq_decoder.decode(json.dumps({"name": name, "blocks": [{"jobs": jobs} for jobs in blocks]}).encode())


def entry(*policies: dict, name: str = NAME) -> str:
    return json.dumps({"Name": name, "Policies": list(policies)})


def commands(*entries: dict) -> dict:
    return {"Name": "allowCommands", "Settings": {"Commands": list(entries)}}


def urls(*prefixes: str) -> dict:
    return {"Name": "allowUrls", "Settings": {"Prefixes": list(prefixes)}}


def hosts(*names: str) -> dict:
    return {"Name": "allowHosts", "Settings": {"Hosts": list(names)}}


@pytest.fixture
def inventory_dir(tmp_path: Path) -> Path:
    """Machine "aa01" at two sites (names repeat across sites, as in the sample inventory)."""
    rows = [("aap", "satellite"), ("aaq", "cluster"), ("aar", "cluster")]
    (tmp_path / "sites.json").write_text("".join(
        json.dumps({"Name": n, "Type": t, "Status": "inService"}) + "\n" for n, t in rows))
    machines = [("aa00", "aap"), ("aa01", "aap"), ("aa01", "aaq"), ("bb02", "aaq"), ("cc03", "aar")]
    (tmp_path / "machines.json").write_text("".join(json.dumps({"Name": m, "Site": s}) + "\n" for m, s in machines))
    return tmp_path


@pytest.fixture
def registry(inventory_dir: Path) -> PolicyRegistry:
    return PolicyRegistry(builtin_policies(InventorySource(inventory_dir)))


def config(registry: PolicyRegistry, jobs: JobRegistry, *entries: str) -> PolicyConfig:
    return parse_policy_config("\n".join(entries), registry, jobs)


async def verdict(registry: PolicyRegistry, jobs: JobRegistry, policy: dict, *jobs_in_block: dict) -> str | None:
    return await decide(workreq(list(jobs_in_block)), jobs, config(registry, jobs, entry(policy)))


async def refused(registry: PolicyRegistry, jobs: JobRegistry, policy: dict, use: dict) -> str:
    """The reason `use` is rejected: by its policy, or (once the job's own validation refuses the same
    value) as an invalid job; and the policy's check alone refuses it too, whatever validation does."""
    reason = await verdict(registry, jobs, policy, use)
    assert reason is not None
    assert reason.startswith((f"policy({policy['Name']}) violation: block 0 job 0 ({use['name']}): ",
                              f"invalid job: block 0 job 0 ({use['name']})")), reason
    check = registry.get(policy["Name"]).build(policy["Settings"], jobs)
    with pytest.raises(PolicyViolation) as violation:
        check(workreq([use]))
    assert violation.value.detail.startswith(f"block 0 job 0 ({use['name']}): ")
    return violation.value.detail


async def judged(registry: PolicyRegistry, jobs: JobRegistry, policy: dict, use: dict, allowed: bool) -> None:
    if allowed:
        assert await verdict(registry, jobs, policy, use) is None
    else:
        await refused(registry, jobs, policy, use)


# ---------------------------------------------------------------- default-deny

@pytest.mark.parametrize("use, policy", [
    (exec_job("/bin/echo", "hi"), "allowCommands"),
    (ssh_job("10.0.0.7"), "allowHosts"),
    (http_job("https://deploy.example/"), "allowUrls"),
])
async def test_each_new_job_is_denied_without_its_allow_policy(registry, jobs, use, policy):
    other = {"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["exec", "ssh", "http", "sleep"]}}
    req = workreq([job("sleep", seconds="1")], [job("sleep", seconds="1"), use])
    reason = await decide(req, jobs, config(registry, jobs, entry(other)))
    assert reason == (f"policy({policy}) violation: block 1 job 1 ({use['name']}): {use['name']} jobs are denied "
                      f"unless the policies of WorkReq name 'Ops' include {policy}")


async def test_the_wrong_allow_policy_does_not_open_another_job(registry, jobs):
    everything = [urls("https://deploy.example/"), hosts("10.0.0.7")]
    reason = await decide(workreq([exec_job("/bin/echo")]), jobs, config(registry, jobs, entry(*everything)))
    assert reason is not None and reason.startswith("policy(allowCommands) violation: block 0 job 0 (exec): ")


async def test_an_allow_policy_of_one_name_does_not_leak_to_another(registry, jobs):
    cfg = config(registry, jobs,
                 entry(commands({"Program": "/bin/echo", "Args": ["*"]})),
                 entry({"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["exec"]}}, name="Other"),
                 entry(commands({"Program": "/bin/true", "Args": []}), name="Third"))
    assert await decide(workreq([exec_job("/bin/echo", "x")]), jobs, cfg) is None
    denied = await decide(workreq([exec_job("/bin/echo", "x")], name="Other"), jobs, cfg)
    assert denied is not None and "unless the policies of WorkReq name 'Other' include allowCommands" in denied
    third = await decide(workreq([exec_job("/bin/echo", "x")], name="Third"), jobs, cfg)
    assert third is not None and third.startswith("policy(allowCommands) violation: block 0 job 0 (exec): command")


class PluginJob:
    name = "pluginRun"
    allowed_by = "allowCommands"
    mandatory_args = frozenset({"argv"})
    optional_args: frozenset[str] = frozenset()

    def validate(self, args):
        pass

    async def run(self, args, ctx):
        pass


class NeedsUnknownPolicy(PluginJob):
    name = "pluginOther"
    allowed_by = "allowNothingRegistered"


async def test_a_plugin_job_naming_an_allow_policy_is_denied_and_checked_like_exec(registry, job_env):
    jobs = JobRegistry([*builtin_jobs(job_env), PluginJob(), NeedsUnknownPolicy()])
    plugin = job("pluginRun", argv=json.dumps(["/bin/rm", "-rf", "/"]))
    open_all = {"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["pluginRun", "pluginOther"]}}
    reason = await decide(workreq([plugin]), jobs, config(registry, jobs, entry(open_all)))
    assert reason is not None and reason.startswith("policy(allowCommands) violation: block 0 job 0 (pluginRun): ")
    allowed = commands({"Program": "/bin/echo", "Args": ["*"]})
    reason = await decide(workreq([plugin]), jobs, config(registry, jobs, entry(allowed)))
    assert reason is not None and 'command ["/bin/rm", "-rf", "/"] is not allowed' in reason
    other = job("pluginOther", argv="[]")
    reason = await decide(workreq([other]), jobs, config(registry, jobs, entry(open_all)))
    assert reason is not None and reason.startswith("policy(allowNothingRegistered) violation: block 0 job 0 (pluginOther)")


async def test_other_jobs_are_unaffected(registry, jobs):
    assert await verdict(registry, jobs, commands({"Program": "/bin/echo", "Args": []}), job("sleep", seconds="1")) is None


# ---------------------------------------------------------------- allowCommands

ECHO_ANY = {"Program": "/bin/echo", "Args": ["*"]}
RESTART = {"Program": "/usr/bin/systemctl", "Args": ["restart", "app-*"]}


async def test_the_violation_names_block_job_command_and_what_is_allowed(registry, jobs):
    req = workreq([exec_job("/bin/echo", "x"), exec_job("/bin/echo"), exec_job("/bin/rm", "-rf", "/")])
    reason = await decide(req, jobs, config(registry, jobs, entry(commands(ECHO_ANY, RESTART))))
    assert reason == ('policy(allowCommands) violation: block 0 job 2 (exec): command ["/bin/rm", "-rf", "/"] is '
                      "not allowed (allowed: /bin/echo *; /usr/bin/systemctl restart app-*)")


@pytest.mark.parametrize("argv", [
    ["/bin/echo"], ["/bin/echo", "a"], ["/bin/echo", "a", "b", "-e", "/etc/passwd"],
    ["/usr/bin/systemctl", "restart", "app-web"], ["/usr/bin/systemctl", "restart", "app-"],
    ["/usr/bin/systemctl", "restart", "app-/x"],  # '*' matches '/' too (fnmatch): documented
])
async def test_allowed_commands(registry, jobs, argv):
    assert await verdict(registry, jobs, commands(ECHO_ANY, RESTART), exec_job(*argv)) is None


async def test_a_secret_argument_passes_only_a_pattern_that_names_secrets(registry, jobs):
    """`*` would otherwise hand any of the runner's secrets to any allowed program (say, curl)."""
    deploy = {"Program": "/usr/bin/deploy", "Args": ["--token", "secret:DEPLOY_*"]}
    for argv in (["/bin/echo", "secret:TOKEN"], ["/usr/bin/systemctl", "restart", "secret:TOKEN"],
                 ["/usr/bin/deploy", "--token", "secret:DB_PASSWORD"], ["/usr/bin/deploy", "secret:DEPLOY_X", "x"]):
        reason = await verdict(registry, jobs, commands(ECHO_ANY, RESTART, deploy), exec_job(*argv))
        assert reason is not None and "is not allowed" in reason, argv
    assert await verdict(registry, jobs, commands(deploy), exec_job("/usr/bin/deploy", "--token", "secret:DEPLOY_TOKEN")) is None


@pytest.mark.parametrize("argv", [
    ["/bin/../bin/rm"], ["/bin/../bin/echo", "x"], ["/bin//echo", "x"], ["/bin/./echo"], ["/usr/bin/echo", "x"],
    ["/bin/echo/", "x"], ["/BIN/ECHO"], ["/bin/echo ", "x"], ["/bin/echo\n"], ["/bin/ech?"], ["/bin/ech*"],
    ["/usr/bin/systemctl"], ["/usr/bin/systemctl", "restart"], ["/usr/bin/systemctl", "restart", "app-web", "db"],
    ["/usr/bin/systemctl", "stop", "app-web"], ["/usr/bin/systemctl", "restart", "App-web"],
    ["/usr/bin/systemctl", "restart", "xapp-web"], ["/usr/bin/systemctl", "--now", "restart", "app-web"],
    ["/usr/bin/systemctl", "restart app-web"], ["/usr/bin/systemctl", "restart", "app-web", ""],
    ["/usr/bin/systemctl", "secret:RESTART", "app-web"],
])
async def test_refused_commands(registry, jobs, argv):
    detail = await refused(registry, jobs, commands(ECHO_ANY, RESTART), exec_job(*argv))
    assert detail.startswith(f"block 0 job 0 (exec): command {json.dumps(argv)} is not allowed (allowed: ")


@pytest.mark.parametrize("argv_text", ['"/bin/echo"', "[]", '["echo", "x"]', "not json", '[["/bin/echo"]]', "{}", ""])
async def test_an_argv_that_exec_would_not_take_is_refused(registry, jobs, argv_text):
    detail = await refused(registry, jobs, commands(ECHO_ANY), job("exec", argv=argv_text))
    assert detail.startswith("block 0 job 0 (exec): argv is not allowed")


async def test_no_args_means_none(registry, jobs):
    policy = commands({"Program": "/usr/bin/uptime", "Args": []})
    assert await verdict(registry, jobs, policy, exec_job("/usr/bin/uptime")) is None
    assert await verdict(registry, jobs, policy, exec_job("/usr/bin/uptime", "-p")) is not None


async def test_star_with_other_patterns_is_one_argument_each(registry, jobs):
    policy = commands({"Program": "/bin/cat", "Args": ["*", "*"]})
    assert await verdict(registry, jobs, policy, exec_job("/bin/cat", "a", "b")) is None
    assert await verdict(registry, jobs, policy, exec_job("/bin/cat", "a")) is not None
    assert await verdict(registry, jobs, policy, exec_job("/bin/cat", "a", "b", "c")) is not None


async def test_a_glob_is_matched_on_the_whole_argument_and_case_sensitively(registry, jobs):
    policy = commands({"Program": "/bin/ls", "Args": ["/srv/app/*.log"]})
    assert await verdict(registry, jobs, policy, exec_job("/bin/ls", "/srv/app/a.log")) is None
    for arg in ("/srv/app/a.LOG", "/srv/app/a.log.gz", "x/srv/app/a.log", "/etc/a.log"):
        assert await verdict(registry, jobs, policy, exec_job("/bin/ls", arg)) is not None, arg
    # '*' crosses '/', as documented: a pattern is a glob, not a path rule
    assert await verdict(registry, jobs, policy, exec_job("/bin/ls", "/srv/app/../../etc/shadow.log")) is None


async def test_env_names_must_be_listed_for_the_matching_command(registry, jobs):
    policy = commands({"Program": "/bin/echo", "Args": ["*"], "Env": ["LANG"]}, RESTART)
    assert await verdict(registry, jobs, policy, exec_job("/bin/echo", "x", env='{"LANG": "C"}')) is None
    assert await verdict(registry, jobs, policy, exec_job("/bin/echo", "x", env="{}")) is None
    reason = await verdict(registry, jobs, policy, exec_job("/bin/echo", "x", env='{"LANG": "C", "LD_PRELOAD": "/x.so"}'))
    assert reason == ('policy(allowCommands) violation: block 0 job 0 (exec): command ["/bin/echo", "x"]: '
                      "env name(s) 'LD_PRELOAD' not allowed (allowed env names: LANG)")
    reason = await verdict(registry, jobs, policy, exec_job("/usr/bin/systemctl", "restart", "app-a", env='{"LANG": "C"}'))
    assert reason is not None and "'LANG' not allowed" in reason and "(allowed env names: none)" in reason


@pytest.mark.parametrize("env", [
    '{"lang": "C"}', '{"LANG ": "C"}', '{"PATH": "/tmp"}', '{"LANG": "C", "LANG": "C", "PATH": "/x"}',
    '{"PATH": "/x", "LANG": "C"}',
])
async def test_env_tricks_are_refused(registry, jobs, env):
    policy = commands({"Program": "/bin/echo", "Args": ["*"], "Env": ["LANG"]})
    assert "not allowed (allowed env names: LANG)" in await refused(registry, jobs, policy, exec_job("/bin/echo", env=env))


@pytest.mark.parametrize("env", ['["LANG"]', "LANG=C", '"x"', "", "{"])
async def test_an_env_that_is_not_a_json_object_is_refused(registry, jobs, env):
    policy = commands({"Program": "/bin/echo", "Args": ["*"], "Env": ["LANG"]})
    assert "env is not a JSON object" in await refused(registry, jobs, policy, exec_job("/bin/echo", env=env))


async def test_env_is_allowed_by_one_matching_entry_holding_all_names(registry, jobs):
    policy = commands({"Program": "/bin/echo", "Args": ["*"], "Env": ["A"]}, {"Program": "/bin/echo", "Args": ["x"], "Env": ["B"]})
    assert await verdict(registry, jobs, policy, exec_job("/bin/echo", "x", env='{"B": "1"}')) is None
    assert await verdict(registry, jobs, policy, exec_job("/bin/echo", "y", env='{"B": "1"}')) is not None
    assert await verdict(registry, jobs, policy, exec_job("/bin/echo", "x", env='{"A": "1", "B": "1"}')) is not None


async def test_a_secret_reference_is_matched_as_its_text(registry, jobs):
    policy = commands({"Program": "/usr/bin/curl", "Args": ["-H", "secret:DEPLOY_TOKEN"]})
    assert await verdict(registry, jobs, policy, exec_job("/usr/bin/curl", "-H", "secret:DEPLOY_TOKEN")) is None
    assert await verdict(registry, jobs, policy, exec_job("/usr/bin/curl", "-H", "secret:OTHER")) is not None


async def test_every_exec_job_in_every_block_is_checked(registry, jobs):
    req = workreq([exec_job("/bin/echo", "a")], [exec_job("/bin/echo", "b"), exec_job("/bin/sh", "-c", "id")])
    reason = await decide(req, jobs, config(registry, jobs, entry(commands(ECHO_ANY))))
    assert reason is not None and reason.startswith("policy(allowCommands) violation: block 1 job 1 (exec): ")


async def test_a_long_command_is_shown_shortened(registry, jobs):
    reason = await verdict(registry, jobs, commands(ECHO_ANY), exec_job("/bin/sh", *["x" * 100] * 50))
    assert reason is not None and len(reason) < 600


@pytest.mark.parametrize("settings, fragment", [
    ({"Commands": []}, "Commands is empty"),
    ({}, "bad Settings"),
    ({"Commands": [{"Program": "echo", "Args": ["*"]}]}, "absolute, normalized path"),
    ({"Commands": [{"Program": "/bin/../bin/echo", "Args": []}]}, "absolute, normalized path"),
    ({"Commands": [{"Program": "/bin//echo", "Args": []}]}, "absolute, normalized path"),
    ({"Commands": [{"Program": "/bin/echo/", "Args": []}]}, "absolute, normalized path"),
    ({"Commands": [{"Program": "", "Args": []}]}, "absolute, normalized path"),
    ({"Commands": [{"Program": "/bin/echo"}]}, "bad Settings"),
    ({"Commands": [{"Program": "/bin/echo", "Args": "*"}]}, "bad Settings"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [1]}]}, "bad Settings"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Shell": True}]}, "bad Settings"),
    ({"Commands": [{"Program": "/bin/echo", "Args": []}], "Extra": 1}, "bad Settings"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Env": ["A=B"]}]}, "not an environment variable name"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Env": "LANG"}]}, "bad Settings"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Secrets": "TOKEN"}]}, "bad Settings"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Secrets": [1]}]}, "bad Settings"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Secrets": ["secret:TOKEN"]}]}, "without 'secret:'"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Secrets": [""]}]}, "Secrets\\[0\\] '' is not a secret's name"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Secrets": ["A", "B C"]}]}, "Secrets\\[1\\]"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Secrets": ["A/B"]}]}, "not a secret's name"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Cwd": "/srv"}]}, "bad Settings"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Cwd": ["srv/app"]}]}, "Cwd\\[0\\] must be an absolute"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Cwd": ["/srv", "/srv/app/"]}]}, "Cwd\\[1\\]"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Cwd": ["/srv/../etc"]}]}, "absolute, normalized"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Cwd": ["//srv"]}]}, "absolute, normalized"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Cwd": ["/srv/./app"]}]}, "absolute, normalized"),
    ({"Commands": [{"Program": "/bin/echo", "Args": [], "Cwd": [""]}]}, "absolute, normalized"),
])
def test_allow_commands_config_errors(registry, jobs, settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config(registry, jobs, entry({"Name": "allowCommands", "Settings": settings}))


async def test_an_env_secret_needs_the_entry_to_list_it(registry, jobs):
    """`Secrets` (default none): an env value `secret:NAME` is allowed only when NAME matches."""
    deploy = {"Program": "/srv/app/deploy", "Args": [], "Env": ["TOKEN", "MODE"], "Secrets": ["DEPLOY_TOKEN", "DB_*"]}
    policy = commands(deploy, {"Program": "/bin/echo", "Args": ["*"], "Env": ["MODE"]})
    for env in ('{"TOKEN": "secret:DEPLOY_TOKEN"}', '{"TOKEN": "secret:DB_RO", "MODE": "fast"}',
                '{"TOKEN": "secret:DEPLOY_TOKEN", "MODE": "secret:DB_X"}', '{"MODE": "secret-ish:EXEC_TOKEN"}'):
        assert await verdict(registry, jobs, policy, exec_job("/srv/app/deploy", env=env)) is None, env
    reason = await verdict(registry, jobs, policy, exec_job("/srv/app/deploy", env='{"TOKEN": "secret:EXEC_TOKEN"}'))
    assert reason == ("policy(allowCommands) violation: block 0 job 0 (exec): command [\"/srv/app/deploy\"]: "
                      "env secret(s) 'EXEC_TOKEN' not allowed (allowed secrets: DB_*, DEPLOY_TOKEN)")
    reason = await verdict(registry, jobs, policy, exec_job("/bin/echo", "x", env='{"MODE": "secret:DEPLOY_TOKEN"}'))
    assert reason is not None and reason.endswith("env secret(s) 'DEPLOY_TOKEN' not allowed (allowed secrets: none)")


@pytest.mark.parametrize("env", [
    '{"TOKEN": "secret:deploy_token"}',  # names are case-sensitive
    '{"TOKEN": "secret:DEPLOY_TOKENX"}', '{"TOKEN": "secret:XDEPLOY_TOKEN"}', '{"TOKEN": "secret:DEPLOY_TOKEN "}',
    '{"TOKEN": "secret:DEPLOY_TOKEN", "TOKEN": "secret:EXEC_TOKEN"}',  # a duplicate key: every value is checked
    '{"TOKEN": "secret:DEPLOY_TOKEN", "MODE": "secret:EXEC_TOKEN"}',
])
async def test_env_secret_tricks_are_refused(registry, jobs, env):
    policy = commands({"Program": "/srv/app/deploy", "Args": [], "Env": ["TOKEN", "MODE"], "Secrets": ["DEPLOY_TOKEN"]})
    detail = await refused(registry, jobs, policy, exec_job("/srv/app/deploy", env=env))
    assert "not allowed (allowed secrets: DEPLOY_TOKEN)" in detail


async def test_a_star_secret_pattern_allows_every_well_formed_name_only(registry, jobs):
    policy = commands({"Program": "/bin/echo", "Args": [], "Env": ["T"], "Secrets": ["*"]})
    assert await verdict(registry, jobs, policy, exec_job("/bin/echo", env='{"T": "secret:ANY.name-1"}')) is None
    assert await refused(registry, jobs, policy, exec_job("/bin/echo", env='{"T": "secret:../x"}'))


async def test_env_secrets_and_names_come_from_one_entry(registry, jobs):
    policy = commands({"Program": "/bin/echo", "Args": [], "Env": ["A"], "Secrets": ["S"]},
                      {"Program": "/bin/echo", "Args": [], "Env": ["A", "B"]})
    assert await verdict(registry, jobs, policy, exec_job("/bin/echo", env='{"A": "secret:S"}')) is None
    assert await verdict(registry, jobs, policy, exec_job("/bin/echo", env='{"A": "1", "B": "2"}')) is None
    reason = await verdict(registry, jobs, policy, exec_job("/bin/echo", env='{"A": "secret:S", "B": "2"}'))
    assert reason is not None and "env secret(s) 'S' not allowed (allowed secrets: none)" in reason


async def test_argv_secrets_keep_their_own_rule(registry, jobs):
    """`Secrets` is about env values: an argv `secret:NAME` still needs a pattern starting `secret:`."""
    policy = commands({"Program": "/bin/echo", "Args": ["*"], "Secrets": ["*"]})
    assert await verdict(registry, jobs, policy, exec_job("/bin/echo", "secret:TOKEN")) is not None


async def test_cwd_must_be_listed_by_the_matching_entry(registry, jobs):
    policy = commands({"Program": "/usr/bin/make", "Args": ["*"], "Cwd": ["/srv/app", "/srv/releases/*"]}, ECHO_ANY)
    for cwd in ("/srv/app", "/srv/releases/42", "/srv/releases/42/web"):
        assert await verdict(registry, jobs, policy, exec_job("/usr/bin/make", "install", cwd=cwd)) is None, cwd
    assert await verdict(registry, jobs, policy, exec_job("/usr/bin/make", "install")) is None  # no cwd: fine
    assert await verdict(registry, jobs, policy, exec_job("/bin/echo", "x")) is None
    reason = await verdict(registry, jobs, policy, exec_job("/usr/bin/make", "install", cwd="/tmp/evil"))
    assert reason == ('policy(allowCommands) violation: block 0 job 0 (exec): command ["/usr/bin/make", "install"]: '
                      "cwd '/tmp/evil' not allowed (allowed cwd: /srv/app, /srv/releases/*)")
    reason = await verdict(registry, jobs, policy, exec_job("/bin/echo", "x", cwd="/srv/app"))
    assert reason is not None and reason.endswith("cwd '/srv/app' not allowed (allowed cwd: none)")


@pytest.mark.parametrize("cwd", [
    "/srv/app/", "/srv/app/.", "/srv/app/..", "/srv/app/../../etc", "/srv/releases/../../etc", "//srv/app",
    "/srv//app", "/srv/releases", "/srv/releases/", "/srv/apps", "/SRV/app", "/srv/app ", "srv/app", "",
    "/srv/releases/./x", "/srv/releases/x/../../../tmp",
])
async def test_cwd_tricks_are_refused(registry, jobs, cwd):
    policy = commands({"Program": "/usr/bin/make", "Args": ["*"], "Cwd": ["/srv/app", "/srv/releases/*"]})
    detail = await refused(registry, jobs, policy, exec_job("/usr/bin/make", "install", cwd=cwd))
    assert "cwd " in detail and "not allowed" in detail


async def test_cwd_env_and_secrets_come_from_one_entry(registry, jobs):
    policy = commands({"Program": "/bin/echo", "Args": [], "Cwd": ["/srv/a"]},
                      {"Program": "/bin/echo", "Args": [], "Env": ["T"], "Secrets": ["S"]})
    assert await verdict(registry, jobs, policy, exec_job("/bin/echo", cwd="/srv/a")) is None
    assert await verdict(registry, jobs, policy, exec_job("/bin/echo", env='{"T": "secret:S"}')) is None
    reason = await verdict(registry, jobs, policy, exec_job("/bin/echo", cwd="/srv/a", env='{"T": "secret:S"}'))
    assert reason is not None and "env name(s) 'T' not allowed (allowed env names: none)" in reason


# ---------------------------------------------------------------- allowUrls

async def test_the_url_violation_names_block_job_url_and_prefixes(registry, jobs):
    req = workreq([http_job("https://deploy.example/x")], [http_job("https://evil/")])
    reason = await decide(req, jobs, config(registry, jobs, entry(urls("https://deploy.example/"))))
    assert reason == ("policy(allowUrls) violation: block 1 job 0 (http): URL 'https://evil/' is not under an "
                      "allowed prefix (allowed: https://deploy.example/)")


@pytest.mark.parametrize("url", [
    "https://deploy.example/", "https://deploy.example", "https://DEPLOY.Example/v1/deploy", "HTTPS://deploy.example/x",
    "https://deploy.example:443/x", "https://deploy.example/x?y=1&z=../../", "https://deploy.example//x",
])
async def test_urls_under_the_prefix(registry, jobs, url):
    assert await verdict(registry, jobs, urls("https://deploy.example/"), http_job(url)) is None


@pytest.mark.parametrize("url", [
    "https://deploy.example.evil.com/", "https://deploy.example@evil.com/", "https://evil.com@deploy.example/",
    "https://deploy.example:pw@evil.com/", "https://deploy.example%40evil.com/", "https://deploy.example:8443/",
    "https://deploy.example:80/", "http://deploy.example/", "ftp://deploy.example/", "https://deploy.example./",
    "https://xdeploy.example/", "https://deploy.examplex/", "https://deploy.example\\@evil.com/",
    "https://deploy.example#@evil.com/", "https://deploy.example%2fevil.com/", "https://deploy%2eexample/",
    "//deploy.example/", "deploy.example/", "https://deploy.example /", "https://ｄeploy.example/",
    "https://deploy.exаmple/",  # Cyrillic a
    "https://[::1]/", "https://127.0.0.1/", "", "https://",
])
async def test_urls_not_under_the_prefix(registry, jobs, url):
    detail = await refused(registry, jobs, urls("https://deploy.example/"), http_job(url))
    assert detail.startswith("block 0 job 0 (http): URL ") and detail.endswith("(allowed: https://deploy.example/)")


@pytest.mark.parametrize("url, allowed", [
    ("https://a.example/api", True), ("https://a.example/api/", True), ("https://a.example/api/x/y", True),
    ("https://a.example/api?x=1", True), ("https://a.example/apix", False), ("https://a.example/api.json", False),
    ("https://a.example/API/x", False), ("https://a.example/ap", False), ("https://a.example/", False),
    ("https://a.example/api/../admin", False), ("https://a.example/api/%2e%2e/admin", False),
    ("https://a.example/api/%2E%2E/admin", False), ("https://a.example/api%2fx", False),
    ("https://a.example/api/..;/admin", False), ("https://a.example/api/.;/x", False),
    ("https://a.example/api;x", False), ("https://a.example/x/api", False), ("https://a.example//api", False),
    ("https://a.example/api/x#frag", False), ("https://a.example/api\\..\\admin", False),
])
async def test_a_prefix_path_ends_on_a_segment_boundary(registry, jobs, url, allowed):
    await judged(registry, jobs, urls("https://a.example/api"), http_job(url), allowed)


@pytest.mark.parametrize("prefix, url, allowed", [
    ("http://10.0.0.7:8080/health", "http://10.0.0.7:8080/health", True),
    ("http://10.0.0.7:8080/health", "http://10.0.0.7/health", False),
    ("http://10.0.0.7:8080/health", "http://10.0.0.07:8080/health", False),
    ("http://10.0.0.7:8080/health", "http://167772167:8080/health", False),
    ("http://10.0.0.7:8080/health", "https://10.0.0.7:8080/health", False),
    ("http://[fd00::7]:8080/", "http://[FD00::7]:8080/x", True),
    ("http://[fd00::7]:8080/", "http://[fd00::8]:8080/x", False),
    ("http://[fd00::7]:8080/", "http://[fd00::7]:8081/x", False),
    ("https://deploy.example:443/", "https://deploy.example/x", True),
    ("https://Deploy.Example/v1/", "https://deploy.example/v1/x", True),
    ("https://deploy.example/v1/", "https://deploy.example/v2/x", False),
    ("https://deploy.example/v1/", "https://deploy.example/v1", False),
])
async def test_prefixes_and_urls_are_compared_normalized(registry, jobs, prefix, url, allowed):
    await judged(registry, jobs, urls(prefix), http_job(url), allowed)


async def test_any_of_several_prefixes(registry, jobs):
    policy = urls("https://a.example/x/", "https://b.example/")
    assert await verdict(registry, jobs, policy, http_job("https://b.example/anything")) is None
    assert await verdict(registry, jobs, policy, http_job("https://a.example/x/1")) is None
    reason = await verdict(registry, jobs, policy, http_job("https://a.example/y"))
    assert reason is not None and reason.endswith("(allowed: https://a.example/x/, https://b.example/)")


@pytest.mark.parametrize("settings, fragment", [
    ({"Prefixes": []}, "Prefixes is empty"),
    ({"Prefixes": ["deploy.example/"]}, "Prefixes\\[0\\]"),
    ({"Prefixes": ["ftp://deploy.example/"]}, "Prefixes\\[0\\]"),
    ({"Prefixes": ["https://u:p@deploy.example/"]}, "Prefixes\\[0\\]"),
    ({"Prefixes": ["https://deploy.example/", "https://deploy.example/#x"]}, "Prefixes\\[1\\]"),
    ({"Prefixes": ["https://deploy.example/a?b=c"]}, "query"),
    ({"Prefixes": ["https://deploy.example/a?"]}, "query"),
    ({"Prefixes": ["https://deploy.example/a/../b"]}, "Prefixes\\[0\\]"),
    ({"Prefixes": ["https://deploy.example/a/..;/b"]}, "'..;'"),
    ({"Prefixes": ["https:///a"]}, "Prefixes\\[0\\]"),
    ({"Prefixes": "https://deploy.example/"}, "bad Settings"),
    ({"Prefixes": ["https://deploy.example/"], "Hosts": []}, "bad Settings"),
    ({"Prefixes": ["https://deploy.example/"], "Secrets": "LB_TOKEN"}, "bad Settings"),
    ({"Prefixes": ["https://deploy.example/"], "Secrets": [None]}, "bad Settings"),
    ({"Prefixes": ["https://deploy.example/"], "Secrets": ["secret:LB_TOKEN"]}, "without 'secret:'"),
    ({"Prefixes": ["https://deploy.example/"], "Secrets": ["LB_TOKEN", "LB TOKEN"]}, "Secrets\\[1\\]"),
    ({"Prefixes": ["https://deploy.example/"], "Secrets": [""]}, "not a secret's name"),
])
def test_allow_urls_config_errors(registry, jobs, settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config(registry, jobs, entry({"Name": "allowUrls", "Settings": settings}))


def secret_urls(*secrets: str) -> dict:
    return {"Name": "allowUrls", "Settings": {"Prefixes": ["https://lb.example/api/"], "Secrets": list(secrets)}}


def http_post(**args: str) -> dict:
    return job("http", method="POST", url="https://lb.example/api/drain", **args)


async def test_a_secret_sent_to_an_allowed_url_must_be_listed(registry, jobs):
    auth = json.dumps({"Authorization": "secret:LB_TOKEN", "Content-Type": "application/json"})
    assert await verdict(registry, jobs, secret_urls("LB_TOKEN"), http_post(headers=auth)) is None
    assert await verdict(registry, jobs, secret_urls("LB_*"), http_post(headers=auth, body="secret:LB_BODY")) is None
    assert await verdict(registry, jobs, secret_urls(), http_post(headers='{"X-A": "secret-ish"}', body="x")) is None
    reason = await verdict(registry, jobs, urls("https://lb.example/api/"), http_post(headers=auth))
    assert reason == ("policy(allowUrls) violation: block 0 job 0 (http): URL 'https://lb.example/api/drain': "
                      "secret(s) 'LB_TOKEN' not allowed (allowed secrets: none)")
    reason = await verdict(registry, jobs, secret_urls("LB_TOKEN", "OTHER"), http_post(body="secret:DB_PASSWORD"))
    assert reason is not None and reason.endswith("secret(s) 'DB_PASSWORD' not allowed (allowed secrets: LB_TOKEN, OTHER)")


@pytest.mark.parametrize("args", [
    {"body": "secret:DB_PASSWORD"},
    {"headers": json.dumps({"X-Note": "secret:DB_PASSWORD"})},
    {"headers": json.dumps({"Authorization": "secret:lb_token"})},  # case-sensitive
    {"headers": json.dumps({"Authorization": "secret:LB_TOKEN", "X-Copy": "secret:DB_PASSWORD"})},
    {"headers": '{"Authorization": "secret:LB_TOKEN", "Authorization": "secret:DB_PASSWORD"}'},  # duplicate key
    {"headers": json.dumps({"Authorization": "secret:LB_TOKEN"}), "body": "secret:DB_PASSWORD"},
    {"headers": "not json"}, {"headers": "[]"},
])
async def test_secret_tricks_to_an_allowed_url_are_refused(registry, jobs, args):
    detail = await refused(registry, jobs, secret_urls("LB_TOKEN"), http_post(**args))
    assert detail.startswith("block 0 job 0 (http): URL 'https://lb.example/api/drain': ")


async def test_the_url_is_checked_before_the_secrets(registry, jobs):
    use = job("http", method="GET", url="https://evil.example/", headers=json.dumps({"Authorization": "secret:LB_TOKEN"}))
    reason = await verdict(registry, jobs, secret_urls("LB_TOKEN"), use)
    assert reason is not None and "is not under an allowed prefix" in reason


# ---------------------------------------------------------------- allowHosts

async def test_the_host_violation_names_block_job_host_and_entries(registry, jobs):
    req = workreq([ssh_job("10.0.0.7"), ssh_job("10.0.0.8")])
    reason = await decide(req, jobs, config(registry, jobs, entry(hosts("aap", "10.0.0.7"))))
    assert reason == ("policy(allowHosts) violation: block 0 job 1 (ssh): host '10.0.0.8' is not allowed "
                      "(allowed: aap, 10.0.0.7)")


@pytest.mark.parametrize("host, allowed", [
    ("10.0.0.7", True), ("::ffff:10.0.0.7", True), ("::ffff:a00:7", True),
    ("10.0.0.07", False), ("010.0.0.7", False), ("10.0.7", False), ("167772167", False), ("0x0a000007", False),
    ("0xa.0.0.7", False), ("10.0.0.7.", False), (" 10.0.0.7", False), ("10.0.0.7 ", False), ("10.0.0.7:22", False),
    ("[10.0.0.7]", False), ("10.0.0.70", False), ("10.0.0.8", False), ("", False),
])
async def test_an_address_is_compared_as_an_address(registry, jobs, host, allowed):
    await judged(registry, jobs, hosts("10.0.0.7"), ssh_job(host), allowed)


@pytest.mark.parametrize("host, allowed", [
    ("10.1.2.0", True), ("10.1.2.255", True), ("10.1.2.77", True), ("10.1.3.0", False), ("10.1.1.255", False),
    ("10.1.2.256", False), ("fd00::1", True), ("fd00::ffff:ffff:ffff:ffff", True), ("fd00:0:0:1::", False),
    ("FD00:0000::0001", True), ("fd00::1%eth0", False), ("[fd00::1]", False), ("::ffff:10.1.2.3", True),
])
async def test_cidr_blocks_and_their_edges(registry, jobs, host, allowed):
    await judged(registry, jobs, hosts("10.1.2.0/24", "fd00::/64"), ssh_job(host), allowed)


@pytest.mark.parametrize("host, allowed", [
    ("db1.prod.example", True), ("DB1.Prod.Example", True), ("a.b.prod.example", True),
    ("prod.example", False), ("db1.prod.example.evil.com", False), ("db1prod.example", False),
    ("db1.prod.example.", False), ("evil.com/.prod.example", False), ("evil.com#.prod.example", False),
    ("evil.com .prod.example", False), ("user@db1.prod.example", False), ("-oProxyCommand=x.prod.example", False),
    ("db1.prod.exampl", False), ("db1.prod.example:22", False), ("x.prod.example\n", False),
    ("web.example", True), ("WEB.EXAMPLE", True), ("web.example.com", False), ("xweb.example", False),
    ("1.prod.example", True), ("prod.example.1", False),
])
async def test_names_and_patterns(registry, jobs, host, allowed):
    await judged(registry, jobs, hosts("*.prod.example", "web.example"), ssh_job(host), allowed)


async def test_a_pattern_never_matches_an_address(registry, jobs):
    with pytest.raises(ConfigError, match="use a CIDR block"):
        config(registry, jobs, entry(hosts("10.0.0.*")))
    assert await verdict(registry, jobs, hosts("*"), ssh_job("10.0.0.7")) is not None
    assert await verdict(registry, jobs, hosts("*"), ssh_job("anything.example")) is None


@pytest.mark.parametrize("host, allowed", [
    ("aa00.aap", True),
    ("AA00.AAP", True),
    ("aa01.aap", True),
    ("aa01.aaq", False),  # the same machine name at a site not listed
    ("aa00", False),  # a bare name: the inventory repeats machine names across sites
    ("aa01", False),
    ("bb02.aaq", False),  # a machine at another site only
    ("bb02.aap", False),  # not at aap
    ("cc03", False),
    ("zz99.aap", False),  # at no site
    ("aaq", False),   # another site's name
    ("aa00.aaq", False), ("aa00.aap.", False), ("aa00.", False), ("aa00 ", False), ("aa 00", False),
    ("aa00.aap.evil.example", False),
])
async def test_machines_at_a_listed_site(registry, jobs, host, allowed):
    await judged(registry, jobs, hosts("aap"), ssh_job(host), allowed)


async def test_a_site_name_as_host_is_not_its_machines(registry, jobs):
    # the ssh job refuses a site as host (one machine per job); a site entry allows its machines only
    assert await verdict(registry, jobs, hosts("aap"), ssh_job("aap")) is not None


async def test_the_inventory_is_read_when_the_workreq_is_decided(registry, jobs, inventory_dir):
    cfg = config(registry, jobs, entry(hosts("aar")))
    assert await decide(workreq([ssh_job("dd04.aar")]), jobs, cfg) is not None
    with open(inventory_dir / "machines.json", "a") as fh:
        fh.write(json.dumps({"Name": "dd04", "Site": "aar"}) + "\n")
    assert await decide(workreq([ssh_job("dd04.aar")]), jobs, cfg) is None


async def test_an_unusable_inventory_refuses_site_machines_but_not_listed_addresses(registry, jobs, inventory_dir):
    cfg = config(registry, jobs, entry(hosts("aap", "10.0.0.7")))
    (inventory_dir / "machines.json").write_text("not json\n")
    reason = await decide(workreq([ssh_job("aa00.aap")]), jobs, cfg)
    assert reason is not None and "the inventory is unusable" in reason
    assert await decide(workreq([ssh_job("10.0.0.7")]), jobs, cfg) is None


async def test_without_an_inventory_a_site_allows_no_machine(jobs):
    registry = PolicyRegistry(builtin_policies())
    reason = await verdict(registry, jobs, hosts("aap"), ssh_job("aa00.aap"))
    assert reason is not None and "no inventory" in reason


async def test_the_sample_inventory_sites_are_used(jobs):
    registry = PolicyRegistry(builtin_policies(InventorySource(Path(__file__).resolve().parents[2] / "data")))
    assert await verdict(registry, jobs, hosts("aaa"), ssh_job("ab07.aaa")) is None
    reason = await verdict(registry, jobs, hosts("aaa"), ssh_job("ab07"))
    assert reason is not None and "written MACHINE.SITE, like 'ab07.aaa'" in reason
    assert await verdict(registry, jobs, hosts("aaa"), ssh_job("web01")) is not None


@pytest.mark.parametrize("hosts_list, fragment", [
    ([], "Hosts is empty"),
    (["10.0.0.07"], "standard form"),
    (["10.0.0.1/24"], "not a CIDR block"),
    (["10.0.0.0/33"], "not a CIDR block"),
    (["host.example/24"], "not a CIDR block"),
    (["fd00::7%eth0"], "standard form"),
    (["[fd00::7]"], "standard form"),
    (["167772167"], "standard form"),
    (["bad host"], "is not a site"),
    (["user@host"], "is not a site"),
    (["host.example."], "is not a site"),
    (["a..b*"], "is not a site"),
    (["10.0.0.?"], "use a CIDR block"), (["10.0.?.7"], "standard form"),
    (["*.7"], "standard form"),
    ([""], "is not a site"),
])
def test_allow_hosts_config_errors(registry, jobs, hosts_list, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config(registry, jobs, entry(hosts(*hosts_list)))


def logins(users: list[str] | None = None, ports: list[int] | None = None) -> dict:
    settings: dict = {"Hosts": ["10.0.0.7", "aap"]}
    if users is not None:
        settings["Users"] = users
    if ports is not None:
        settings["Ports"] = ports
    return {"Name": "allowHosts", "Settings": settings}


def login(user: str = "deploy", host: str = "10.0.0.7", **port: str) -> dict:
    return job("ssh", host=host, user=user, command="uptime", **port)


async def test_hosts_alone_allow_any_user_and_port(registry, jobs):
    for use in (login("root"), login("deploy", port="2222"), login("x", host="aa00.aap", port="22")):
        assert await verdict(registry, jobs, logins(), use) is None


@pytest.mark.parametrize("use, allowed", [
    (login("deploy"), True), (login("ops", host="aa00.aap"), True), (login("root"), False),
    (login("Deploy"), False), (login("deploy "), False), (login("deploy.x"), False), (login(""), False),
])
async def test_users_must_be_listed(registry, jobs, use, allowed):
    await judged(registry, jobs, logins(users=["deploy", "ops"]), use, allowed)


async def test_the_user_violation_names_the_user_and_lists_users(registry, jobs):
    reason = await verdict(registry, jobs, logins(users=["ops", "deploy"]), login("root"))
    assert reason == ("policy(allowHosts) violation: block 0 job 0 (ssh): host '10.0.0.7': user 'root' is not "
                      "allowed (allowed users: deploy, ops)")
    reason = await verdict(registry, jobs, logins(users=["ops"]), login("root", host="10.0.0.8"))
    assert reason is not None and "host '10.0.0.8' is not allowed (allowed: 10.0.0.7, aap)" in reason


@pytest.mark.parametrize("port, allowed", [
    (None, True), ("22", True), ("2222", True), ("022", True), ("23", False), ("0", False), ("65536", False),
    ("", False), ("22 ", False), ("+22", False), ("2_2", False), ("٢٢", False),
])
async def test_ports_must_be_listed(registry, jobs, port, allowed):
    use = login() if port is None else login(port=port)
    await judged(registry, jobs, logins(ports=[22, 2222]), use, allowed)


async def test_the_port_violation_names_the_port_and_lists_ports(registry, jobs):
    reason = await verdict(registry, jobs, logins(users=["deploy"], ports=[2222, 22]), login(port="2200"))
    assert reason == ("policy(allowHosts) violation: block 0 job 0 (ssh): host '10.0.0.7': port '2200' is not "
                      "allowed (allowed ports: 22, 2222)")
    reason = await verdict(registry, jobs, logins(ports=[2222]), login())
    assert reason is not None and reason.endswith("port '22' is not allowed (allowed ports: 2222)")


@pytest.mark.parametrize("settings, fragment", [
    ({"Hosts": ["aap"], "Users": []}, "Users is empty"),
    ({"Hosts": ["aap"], "Users": None}, "bad Settings"),
    ({"Hosts": ["aap"], "Users": "deploy"}, "bad Settings"),
    ({"Hosts": ["aap"], "Users": ["deploy", "bad user"]}, "Users\\[1\\]: 'user' must be a POSIX user name"),
    ({"Hosts": ["aap"], "Users": ["-oProxyCommand=x"]}, "Users\\[0\\]"),
    ({"Hosts": ["aap"], "Users": [""]}, "Users\\[0\\]"),
    ({"Hosts": ["aap"], "Ports": []}, "Ports is empty"),
    ({"Hosts": ["aap"], "Ports": None}, "bad Settings"),
    ({"Hosts": ["aap"], "Ports": ["22"]}, "bad Settings"),
    ({"Hosts": ["aap"], "Ports": [True]}, "bad Settings"),
    ({"Hosts": ["aap"], "Ports": [22.0]}, "bad Settings"),
    ({"Hosts": ["aap"], "Ports": [22, 0]}, "Ports\\[1\\] must be a port number"),
    ({"Hosts": ["aap"], "Ports": [65536]}, "Ports\\[0\\] must be a port number"),
    ({"Hosts": ["aap"], "Ports": [-22]}, "Ports\\[0\\]"),
])
def test_allow_hosts_users_and_ports_config_errors(registry, jobs, settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config(registry, jobs, entry({"Name": "allowHosts", "Settings": settings}))


def test_allow_hosts_settings_are_strict(registry, jobs):
    for settings in ({"Hosts": "aap"}, {"Hosts": ["aap"], "Sites": []}, {}, {"Hosts": [7]}):
        with pytest.raises(ConfigError, match="bad Settings"):
            config(registry, jobs, entry({"Name": "allowHosts", "Settings": settings}))
