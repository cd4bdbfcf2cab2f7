"""allowCommands, allowHosts, allowUrls and default-deny through the running system: a WorkReq
submitted over NATS with a command, host or URL its name's policies do not allow is rejected (400)
with a message naming the job and what was not allowed; the same name with allowed ones is approved;
a name without allowCommands cannot use `exec` at all; the optional settings (allowCommands' `Secrets`
and `Cwd`, allowUrls' `Secrets`, allowHosts' `Users` and `Ports`) are read from policies.json and
enforced."""

from __future__ import annotations

import json
import shutil

import nats
import pytest

from tests.conftest import REPO, start_system
from wf import client
from wf.client import WfError

pytestmark = pytest.mark.integration
ALLOWED = "AllowPolicyTest"
NO_ALLOW = "AllowPolicyMissingTest"
STRICT = "AllowPolicyStrictTest"

POLICIES = [
    {"Name": ALLOWED, "Policies": [
        {"Name": "allowCommands", "Settings": {"Commands": [
            {"Program": "/bin/echo", "Args": ["*"]},
            {"Program": "/usr/bin/systemctl", "Args": ["restart", "app-*"]}]}},
        {"Name": "allowHosts", "Settings": {"Hosts": ["aap", "10.0.0.7"]}},
        {"Name": "allowUrls", "Settings": {"Prefixes": ["https://deploy.example/"]}},
    ]},
    {"Name": NO_ALLOW, "Policies": [
        {"Name": "restrictJobTypes", "Settings": {"AllowedJobs": ["exec", "ssh", "http", "sleep"]}},
        {"Name": "allowHosts", "Settings": {"Hosts": ["10.0.0.7"]}},
    ]},
    {"Name": STRICT, "Policies": [
        {"Name": "allowCommands", "Settings": {"Commands": [
            {"Program": "/srv/app/deploy", "Args": [], "Env": ["TOKEN"], "Secrets": ["DEPLOY_*"],
             "Cwd": ["/srv/app"]}]}},
        {"Name": "allowHosts", "Settings": {"Hosts": ["10.0.0.7"], "Users": ["deploy"], "Ports": [22, 2222]}},
        {"Name": "allowUrls", "Settings": {"Prefixes": ["https://lb.example/api/"], "Secrets": ["LB_TOKEN"]}},
    ]},
]


@pytest.fixture(scope="module")
def allow_system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("allow")
    config_dir = tmp / "configs"
    shutil.copytree(REPO / "configs", config_dir)
    with open(config_dir / "policies.json", "a") as fh:
        fh.writelines(json.dumps(entry) + "\n" for entry in POLICIES)
    with open(config_dir / "es.json", "a") as fh:
        fh.writelines(json.dumps({"Name": name, "Status": "go"}) + "\n" for name in (ALLOWED, NO_ALLOW, STRICT))
    system = start_system(tmp, "--time-scale", "0", "--runners", "1", config_dir=config_dir)
    yield system
    assert system.stop() == 0, system.log_tail()


@pytest.fixture
async def cnc(allow_system):
    nc = await nats.connect(allow_system.client_url)
    yield nc
    await nc.close()


def exec_job(*argv: str) -> dict:
    return {"name": "exec", "args": {"argv": json.dumps(list(argv))}}


def ssh_job(host: str) -> dict:
    return {"name": "ssh", "args": {"host": host, "user": "ops", "command": "uptime"}}


def http_job(url: str) -> dict:
    return {"name": "http", "args": {"method": "GET", "url": url}}


def body(name: str, *blocks: list[dict]) -> bytes:
    return json.dumps({"name": name, "blocks": [{"jobs": jobs} for jobs in blocks]}).encode()


async def rejected(nc, workreq: bytes) -> str:
    with pytest.raises(WfError) as err:
        await client.submit(nc, workreq)
    assert err.value.code == 400, err.value
    assert err.value.body["verdict"] == "rejected", err.value.body
    return err.value.message


async def test_a_command_not_allowed_is_rejected_naming_the_job_and_command(cnc):
    message = await rejected(cnc, body(ALLOWED, [exec_job("/bin/echo", "ok"), exec_job("/bin/rm", "-rf", "/")]))
    assert message == ('policy(allowCommands) violation: block 0 job 1 (exec): command ["/bin/rm", "-rf", "/"] is '
                       "not allowed (allowed: /bin/echo *; /usr/bin/systemctl restart app-*)")


async def test_a_program_path_trick_is_rejected(cnc):
    message = await rejected(cnc, body(ALLOWED, [exec_job("/bin/../bin/rm", "-rf", "/")]))
    assert message.startswith('policy(allowCommands) violation: block 0 job 0 (exec): command ["/bin/../bin/rm"')


async def test_a_host_not_allowed_is_rejected_naming_the_job_and_host(cnc):
    message = await rejected(cnc, body(ALLOWED, [ssh_job("10.0.0.7")], [ssh_job("10.0.0.8")]))
    assert message == ("policy(allowHosts) violation: block 1 job 0 (ssh): host '10.0.0.8' is not allowed "
                       "(allowed: aap, 10.0.0.7)")
    message = await rejected(cnc, body(ALLOWED, [ssh_job("db.evil.example")]))
    assert "block 0 job 0 (ssh): host 'db.evil.example' is not allowed" in message


async def test_a_url_not_allowed_is_rejected_naming_the_job_and_url(cnc):
    message = await rejected(cnc, body(ALLOWED, [http_job("https://deploy.example/ok")],
                                       [http_job("https://deploy.example.evil.com/")]))
    assert message == ("policy(allowUrls) violation: block 1 job 0 (http): URL 'https://deploy.example.evil.com/' "
                       "is not under an allowed prefix (allowed: https://deploy.example/)")


async def test_the_same_name_with_allowed_command_host_and_url_is_approved(cnc):
    reply = await client.submit(cnc, body(ALLOWED, [exec_job("/bin/echo", "hello", "world")]))
    assert reply["verdict"] == "approved", reply
    reply = await client.submit(cnc, body(
        ALLOWED,
        [exec_job("/usr/bin/systemctl", "restart", "app-web"), ssh_job("aa03.aap"), ssh_job("10.0.0.7")],
        [http_job("https://DEPLOY.example:443/v1/health?full=1")],
    ))
    assert reply["verdict"] == "approved", reply


async def test_exec_without_allow_commands_is_denied_by_default(cnc):
    message = await rejected(cnc, body(NO_ALLOW, [{"name": "sleep", "args": {"seconds": "1"}}, exec_job("/bin/echo")]))
    assert message == ("policy(allowCommands) violation: block 0 job 1 (exec): exec jobs are denied unless the "
                       f"policies of WorkReq name '{NO_ALLOW}' include allowCommands")
    message = await rejected(cnc, body(NO_ALLOW, [http_job("https://deploy.example/")]))
    assert message.startswith("policy(allowUrls) violation: block 0 job 0 (http): http jobs are denied")
    reply = await client.submit(cnc, body(NO_ALLOW, [ssh_job("10.0.0.7")]))  # its allowHosts does allow this
    assert reply["verdict"] == "approved", reply


async def test_secrets_cwd_users_and_ports_are_enforced_as_configured(cnc):
    deploy = {"name": "exec", "args": {"argv": '["/srv/app/deploy"]', "cwd": "/srv/app",
                                       "env": '{"TOKEN": "secret:DEPLOY_TOKEN"}'}}
    login = {"name": "ssh", "args": {"host": "10.0.0.7", "user": "deploy", "command": "uptime", "port": "2222"}}
    drain = {"name": "http", "args": {"method": "POST", "url": "https://lb.example/api/drain",
                                      "headers": json.dumps({"Authorization": "secret:LB_TOKEN"})}}
    reply = await client.submit(cnc, body(STRICT, [deploy, login, drain]))
    assert reply["verdict"] == "approved", reply

    leaked = {**deploy, "args": {**deploy["args"], "env": '{"TOKEN": "secret:DB_PASSWORD"}'}}
    message = await rejected(cnc, body(STRICT, [leaked]))
    assert message == ('policy(allowCommands) violation: block 0 job 0 (exec): command ["/srv/app/deploy"]: '
                       "env secret(s) 'DB_PASSWORD' not allowed (allowed secrets: DEPLOY_*)")
    message = await rejected(cnc, body(STRICT, [{**deploy, "args": {**deploy["args"], "cwd": "/tmp"}}]))
    assert message == ('policy(allowCommands) violation: block 0 job 0 (exec): command ["/srv/app/deploy"]: '
                       "cwd '/tmp' not allowed (allowed cwd: /srv/app)")
    message = await rejected(cnc, body(STRICT, [{**login, "args": {**login["args"], "user": "root"}}]))
    assert message == ("policy(allowHosts) violation: block 0 job 0 (ssh): host '10.0.0.7': user 'root' is not "
                       "allowed (allowed users: deploy)")
    message = await rejected(cnc, body(STRICT, [{**login, "args": {**login["args"], "port": "2200"}}]))
    assert message.endswith("port '2200' is not allowed (allowed ports: 22, 2222)")
    leak = {**drain, "args": {**drain["args"], "body": "secret:DB_PASSWORD"}}
    message = await rejected(cnc, body(STRICT, [leak]))
    assert message == ("policy(allowUrls) violation: block 0 job 0 (http): URL 'https://lb.example/api/drain': "
                       "secret(s) 'DB_PASSWORD' not allowed (allowed secrets: LB_TOKEN)")


async def test_an_authorization_secret_needs_allow_urls_secrets(cnc):
    """allowUrls' `Secrets` defaults to none: ALLOWED's entry lists none, so no secret goes to its URLs."""
    drain = {"name": "http", "args": {"method": "GET", "url": "https://deploy.example/x",
                                      "headers": json.dumps({"Authorization": "secret:LB_TOKEN"})}}
    message = await rejected(cnc, body(ALLOWED, [drain]))
    assert message.endswith("secret(s) 'LB_TOKEN' not allowed (allowed secrets: none)")
