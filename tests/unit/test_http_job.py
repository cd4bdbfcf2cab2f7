"""The `http` job: its args refused before anything runs, and its runs against a real HTTP server
(tests/httpserver.py) on a loopback port: statuses, retries, timeouts, expect_json, no redirect, no
proxy from the environment, secrets sent but never shown, and a cancel that closes the connection."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from services.jobs import ArgError, JobContext, JobError
from services.jobs.http_call import HttpJob, parse_url
from services.jobs.output import Output, Secrets
from tests.httpserver import HttpTestServer
from wf.up import free_port

TOKEN = "s3cr3t-Token-4711"
BODY_SECRET = "very-private-payload-0815"


@pytest.fixture(scope="module")
def server():
    with HttpTestServer() as running:
        yield running


@pytest.fixture
def job() -> HttpJob:
    return HttpJob()


@pytest.fixture
def secrets() -> Secrets:
    return Secrets(environ={"TOKEN": TOKEN, "PAYLOAD": BODY_SECRET})


def context(secrets: Secrets, attempt: int = 1) -> JobContext:
    return JobContext(workflow_id="w", block=0, job=0, attempt=attempt, time_scale=1.0, output=Output(secrets),
                      secrets=secrets)


async def failure(job: HttpJob, args: dict[str, str], ctx: JobContext) -> JobError:
    with pytest.raises(JobError) as err:
        await job.run(args, ctx)
    return err.value


# ------------------------------------------------------------------ validation


def test_the_registry_knows_it_and_its_args(jobs):
    jobs.validate("http", {"method": "GET", "url": "https://deploy.example/api"})
    jobs.validate("http", {"method": "POST", "url": "http://127.0.0.1:8080/x?y=1", "body": "{}",
                           "headers": '{"Content-Type": "application/json", "authorization": "secret:TOKEN", "X-Trace": "1"}',
                           "expect_status": "200, 204,3xx", "expect_json": "checks.db=green", "timeout": "3600",
                           "attempts": "1", "fatal": "true"})
    with pytest.raises(ArgError) as err:
        jobs.validate("http", {"method": "GET", "url": "http://a/", "retries": "3"})
    assert err.value.arg == "retries"
    with pytest.raises(ArgError) as err:
        jobs.validate("http", {"url": "http://a/"})
    assert err.value.arg == "method"
    assert HttpJob().allowed_by == "allowUrls"


@pytest.mark.parametrize("method", ["get", "OPTIONS", "CONNECT", "TRACE", "", "GET ", "G\u0415T"])
def test_bad_methods_are_refused(job, method):
    with pytest.raises(ArgError) as err:
        job.validate({"method": method, "url": "http://a/"})
    assert err.value.arg == "method" and "GET, HEAD, POST, PUT, PATCH, DELETE" in err.value.message


@pytest.mark.parametrize("url", [
    "http://user:pw@host/", "http://user@host/", "http://host/a#frag", "http://host/a#", "http://host/a/../b",
    "http://host/./b", "http://host/a/..", "http://host/%2e%2e/b", "http://host/%2E/b", "http://host/a%2fb",
    "http://host/a%5cb", "http://host/a\\b", "ftp://host/", "file:///etc/passwd", "host/path", "http:///path",
    "http://host/a b", "http://host/\n", "http://host:99999/", "http://host:x/", "secret:TOKEN", "",
])
def test_bad_urls_are_refused(job, url):
    with pytest.raises(ArgError) as err:
        job.validate({"method": "GET", "url": url})
    assert err.value.arg == "url"


@pytest.mark.parametrize(("url", "normal"), [
    ("HTTP://Deploy.Example", "http://deploy.example/"),
    ("https://deploy.example:443/api?x=1", "https://deploy.example/api?x=1"),
    ("http://127.0.0.1:8080/health", "http://127.0.0.1:8080/health"),
    ("http://[::1]:80/h", "http://[::1]/h"),
])
def test_parse_url_normalizes(url, normal):
    assert parse_url(url) == normal


@pytest.mark.parametrize("headers", [
    '{"Host": "evil"}', '{"host": "evil"}', '{"Cookie": "a=b"}', '{"Content-Length": "3"}',
    '{"Transfer-Encoding": "chunked"}', '{"Connection": "close"}', '{"Proxy-Authorization": "x"}',
    '{"Referer": "x"}', '{"X-Ok": "a\\r\\nHost: evil"}', '{"X-Ok": "a\\nb"}', '{"X-Ok": "a\\u0000"}',
    '{"X-Ok": "caf\\u00e9"}', '{"X-Ok": 1}', '{"X-Ok": null}', '{"X Bad": "1"}', '{"X-Ok:": "1"}', '{"": "1"}',
    '{"X-A": "1", "x-a": "2"}', '{"X-Ok": "secret:"}', '{"X-Ok": "secret:bad name"}',
    '{"Authorization": "Bearer abc"}', '{"authorization": ""}', '["Accept", "x"]', '"Accept: x"', "Accept: text/plain", "{", "", '{"X-A": "' + "v" * 8193 + '"}',
    json.dumps({f"X-H{i}": "1" for i in range(33)}),
])
def test_bad_headers_are_refused(job, headers):
    with pytest.raises(ArgError) as err:
        job.validate({"method": "GET", "url": "http://a/", "headers": headers})
    assert err.value.arg == "headers"


def test_allowed_headers_in_any_case(job):
    job.validate({"method": "GET", "url": "http://a/", "headers": json.dumps({
        "accept": "*/*", "CONTENT-TYPE": "text/plain", "Authorization": "secret:TOKEN", "User-Agent": "me",
        "If-Match": '"e1"', "If-None-Match": "*", "X-Request-Id": "r1", "x-anything": "tab\there"})})


@pytest.mark.parametrize("expect", ["", "2XX,", "200;204", "2x", "600", "099", "2xxx", "6xx", "ok", "20O", " , "])
def test_bad_expect_status_is_refused(job, expect):
    with pytest.raises(ArgError) as err:
        job.validate({"method": "GET", "url": "http://a/", "expect_status": expect})
    assert err.value.arg == "expect_status"


@pytest.mark.parametrize("expect", ["status", "=ok", "a..b=1", ".a=1", "a.=1", "a b=1", "x" * 5000 + "=1"])
def test_bad_expect_json_is_refused(job, expect):
    with pytest.raises(ArgError) as err:
        job.validate({"method": "GET", "url": "http://a/", "expect_json": expect})
    assert err.value.arg == "expect_json"


def test_expect_json_needs_a_body(job):
    with pytest.raises(ArgError) as err:
        job.validate({"method": "HEAD", "url": "http://a/", "expect_json": "status=ok"})
    assert err.value.arg == "expect_json"


@pytest.mark.parametrize(("arg", "value"), [
    ("timeout", "0"), ("timeout", "3601"), ("timeout", "1.5"), ("attempts", "0"), ("attempts", "11"),
    ("fatal", "yes"), ("fatal", "True"), ("body", "x" * (1024 * 1024 + 1)), ("body", "secret:no good"),
    ("body", "\ud800"),
])
def test_bad_bounds_are_refused(job, arg, value):
    with pytest.raises(ArgError) as err:
        job.validate({"method": "POST", "url": "http://a/", arg: value})
    assert err.value.arg == arg


def test_attempts_are_the_calls_own(job):
    assert job.max_attempts == 10 and job.retry_base_s == 1.0
    assert job.max_attempts_for({"method": "GET", "url": "http://a/"}) == 3
    assert job.max_attempts_for({"method": "GET", "url": "http://a/", "attempts": "1"}) == 1
    assert job.max_attempts_for({"method": "GET", "url": "http://a/", "attempts": "10"}) == 10
    job.validate({"method": "POST", "url": "http://a/", "body": "x" * (1024 * 1024)})


# ------------------------------------------------------------------ runs against the real server


async def test_a_200_succeeds_with_the_body_in_the_output(job, server, secrets):
    ctx = context(secrets)
    await job.run({"method": "GET", "url": server.url("/health")}, ctx)
    assert json.loads(ctx.output.tail()) == {"status": "ok"}
    await job.run({"method": "HEAD", "url": server.url("/health")}, ctx := context(secrets))
    assert ctx.output.tail() == ""


async def test_the_default_user_agent_and_the_body_are_sent(job, server, secrets):
    ctx = context(secrets)
    await job.run({"method": "PUT", "url": server.url("/echo?a=1"), "body": '{"drain": true}',
                   "headers": '{"Content-Type": "application/json"}'}, ctx)
    echoed = json.loads(ctx.output.tail())
    assert echoed["method"] == "PUT" and echoed["query"] == "a=1" and echoed["body"] == '{"drain": true}'
    assert echoed["headers"]["User-Agent"] == "wf-http/1"
    assert echoed["headers"]["Content-Type"] == "application/json"
    await job.run({"method": "GET", "url": server.url("/echo"), "headers": '{"user-agent": "mine/2"}'},
                  ctx := context(secrets))
    headers = json.loads(ctx.output.tail())["headers"]
    assert [v for k, v in headers.items() if k.lower() == "user-agent"] == ["mine/2"]


async def test_a_404_fails_not_retryable_naming_the_status_and_url(job, server, secrets):
    err = await failure(job, {"method": "GET", "url": server.url("/status/404")}, context(secrets))
    assert not err.retryable and not err.fatal
    assert "404" in err.message and server.url("/status/404") in err.message and "2xx" in err.message
    err = await failure(job, {"method": "GET", "url": server.url("/status/404"), "fatal": "true"}, context(secrets))
    assert err.fatal and not err.retryable


async def test_expect_status_lists_and_classes(job, server, secrets):
    await job.run({"method": "GET", "url": server.url("/status/404"), "expect_status": "200,404"}, context(secrets))
    await job.run({"method": "DELETE", "url": server.url("/status/204"), "expect_status": "4xx,204"}, context(secrets))
    err = await failure(job, {"method": "GET", "url": server.url("/status/200"), "expect_status": "204"}, context(secrets))
    assert "200" in err.message and not err.retryable


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
async def test_5xx_and_429_are_retryable_until_the_last_attempt(job, server, secrets, status):
    url = server.url(f"/status/{status}")
    err = await failure(job, {"method": "GET", "url": url}, context(secrets, attempt=1))
    assert err.retryable and str(status) in err.message
    err = await failure(job, {"method": "GET", "url": url, "fatal": "true"}, context(secrets, attempt=3))
    assert not err.retryable and err.fatal and "no more tries" in err.message
    err = await failure(job, {"method": "GET", "url": url, "attempts": "1"}, context(secrets, attempt=1))
    assert not err.retryable


async def test_a_flaky_service_succeeds_on_a_later_attempt(job, server, secrets):
    args = {"method": "GET", "url": server.url("/flaky?fails=2&key=unit"), "expect_json": "status=ok"}
    for attempt in (1, 2):
        err = await failure(job, args, context(secrets, attempt=attempt))
        assert err.retryable and "503" in err.message
    await job.run(args, context(secrets, attempt=3))


async def test_connection_refused_is_retryable(job, secrets):
    url = f"http://127.0.0.1:{free_port()}/health"
    err = await failure(job, {"method": "GET", "url": url}, context(secrets))
    assert err.retryable and "could not connect" in err.message and url in err.message


async def test_a_timeout_is_retryable_and_keeps_to_its_bound(job, server, secrets):
    started = time.monotonic()
    err = await failure(job, {"method": "GET", "url": server.url("/slow?s=5"), "timeout": "1"}, context(secrets))
    assert err.retryable and "tim" in err.message
    assert time.monotonic() - started < 3


async def test_expect_json_ok_and_mismatch(job, server, secrets):
    server.route("/doc", body={"status": "ok", "count": 3, "up": True, "version": "1.2",
                               "checks": {"db": "green", "cache": "red"}, "items": [{"state": "up"}, {"state": "down"}]})
    url = server.url("/doc")
    for expect in ("status=ok", 'status="ok"', "count=3", "count=3.0", "up=true", "version=1.2",
                   "checks.db=green", "items.0.state=up", "items.1.state=down", 'checks={"db":"green","cache":"red"}'):
        await job.run({"method": "GET", "url": url, "expect_json": expect}, context(secrets))
    for expect, got in (("checks.cache=green", '"red"'), ("count=4", "3"), ("up=1", "true"), ("count=x", "3"),
                        ("items.2.state=up", "no such path"), ("checks.dns=ok", "no such path"),
                        ("status.x=ok", "no such path")):
        err = await failure(job, {"method": "GET", "url": url, "expect_json": expect}, context(secrets))
        path, _, wanted = expect.partition("=")
        assert err.retryable, expect  # a service coming back may answer {"status": "starting"}: polled
        last = await failure(job, {"method": "GET", "url": url, "expect_json": expect, "attempts": "1"}, context(secrets))
        assert not last.retryable and "no more tries" in last.message, expect
        assert path in err.message and f"expected {wanted}" in err.message and got in err.message, err.message
    server.route("/text", body="not json")
    err = await failure(job, {"method": "GET", "url": server.url("/text"), "expect_json": "status=ok"}, context(secrets))
    assert "not JSON" in err.message and not err.retryable
    err = await failure(job, {"method": "GET", "url": server.url(f"/big?n={1024 * 1024 + 1}"), "expect_json": "a=1"},
                        context(secrets))
    assert "over 1,048,576 bytes" in err.message


async def test_the_output_is_bounded(job, server, secrets):
    ctx = context(secrets)
    await job.run({"method": "GET", "url": server.url(f"/big?n={2 * 1024 * 1024}")}, ctx)
    assert ctx.output.total == 2 * 1024 * 1024
    assert len(ctx.output.tail()) == 4096 and len(ctx.output.full()) < 300 * 1024


async def test_a_redirect_is_not_followed(job, server, secrets):
    before = server.count("/echo")
    err = await failure(job, {"method": "GET", "url": server.url("/status/302")}, context(secrets))
    assert "302" in err.message and not err.retryable
    await job.run({"method": "GET", "url": server.url("/status/302"), "expect_status": "3xx"}, context(secrets))
    assert server.count("/echo") == before


async def test_secrets_reach_the_server_but_never_the_output_or_errors(job, server, secrets):
    ctx = context(secrets)
    args = {"method": "POST", "url": server.url("/echo"), "body": "secret:PAYLOAD",
            "headers": json.dumps({"Authorization": "secret:TOKEN", "X-Plain": "visible"})}
    await job.run(args, ctx)
    seen = server.requests[-1]
    assert seen.headers["Authorization"] == TOKEN and seen.body == BODY_SECRET.encode()
    shown = ctx.output.tail() + ctx.output.full()
    assert TOKEN not in shown and BODY_SECRET not in shown
    echoed = json.loads(ctx.output.tail())
    assert echoed["headers"]["Authorization"] == "[secret:TOKEN]" and echoed["body"] == "[secret:PAYLOAD]"
    assert echoed["headers"]["X-Plain"] == "visible"
    # an expect_json mismatch that would show the secret shows its name
    err = await failure(job, {**args, "expect_json": "headers.Authorization=nope"}, ctx := context(secrets))
    assert TOKEN not in err.message and "[secret:TOKEN]" in err.message
    err = await failure(job, {**args, "expect_json": "body=nope"}, context(secrets))
    assert BODY_SECRET not in err.message and "[secret:PAYLOAD]" in err.message


async def test_a_secret_not_set_fails_without_calling(job, server, secrets):
    before = server.count("/echo")
    err = await failure(job, {"method": "GET", "url": server.url("/echo"), "headers": '{"Authorization": "secret:NOPE"}'},
                        context(secrets))
    assert "NOPE" in err.message and not err.retryable
    assert server.count("/echo") == before
    bad = Secrets(environ={"CRLF": "abc\r\nHost: evil"})
    err = await failure(job, {"method": "GET", "url": server.url("/echo"), "headers": '{"X-A": "secret:CRLF"}'},
                        context(bad))
    assert "control character" in err.message and "evil" not in err.message
    assert server.count("/echo") == before


async def test_http_proxy_in_the_environment_is_ignored(job, server, secrets, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    # the control: a client that reads the environment goes to the dead proxy
    before = server.count("/health")
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(trust_env=True) as client:
            await client.get(server.url("/health"))
    assert server.count("/health") == before
    ctx = context(secrets)
    await job.run({"method": "GET", "url": server.url("/health"), "expect_json": "status=ok"}, ctx)
    assert server.count("/health") == before + 1


async def test_cancel_mid_request_returns_at_once_and_closes_the_connection(job, server, secrets):
    before, gone = server.count("/slow"), server.disconnects("/slow")
    task = asyncio.create_task(job.run({"method": "GET", "url": server.url("/slow?s=30"), "timeout": "60"},
                                       context(secrets)))
    deadline = time.monotonic() + 5
    while server.count("/slow") == before:
        assert time.monotonic() < deadline and not task.done(), "the request never reached the server"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert time.monotonic() - started < 1
    assert task.cancelled()
    while server.disconnects("/slow") == gone:  # the server saw the connection closed
        assert time.monotonic() - started < 2, "the connection was left open"
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------ compressed bodies


async def test_the_body_is_asked_for_uncompressed(job, server, secrets):
    await job.run({"method": "GET", "url": server.url("/echo")}, ctx := context(secrets))
    headers = json.loads(ctx.output.tail())["headers"]
    assert [v for k, v in headers.items() if k.lower() == "accept-encoding"] == ["identity"]


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", "deflate-raw", "gzip-2-members", "identity"])
async def test_a_compressed_body_sent_anyway_is_decoded(job, server, secrets, encoding):
    import gzip
    import zlib

    doc = {"status": "ok", "pad": "p" * 100_000}
    body = json.dumps(doc).encode()
    sent, name = {
        "gzip": (gzip.compress(body), "gzip"),
        "x-gzip": (gzip.compress(body), "x-gzip"),
        "deflate": (zlib.compress(body), "deflate"),
        "deflate-raw": (zlib.compress(body, wbits=-zlib.MAX_WBITS), "deflate"),
        "gzip-2-members": (gzip.compress(body[:5000]) + gzip.compress(body[5000:]), "gzip"),
        "identity": (body, "identity"),
    }[encoding]
    server.route(f"/enc/{encoding}", 200, sent, {"Content-Encoding": name, "Content-Type": "application/json"})
    ctx = context(secrets)
    await job.run({"method": "GET", "url": server.url(f"/enc/{encoding}"), "expect_json": "status=ok"}, ctx)
    assert ctx.output.total == len(body) and ctx.output.tail().endswith('p"}')


async def test_a_gzip_bomb_is_decoded_in_bounded_steps_and_cut(job, server, secrets, monkeypatch):
    import gzip

    from services.jobs import http_call

    monkeypatch.setattr(http_call, "MAX_READ_BYTES", 8 * 1024 * 1024)
    server.route("/bomb", 200, gzip.compress(b"\0" * (64 * 1024 * 1024), 9), {"Content-Encoding": "gzip"})
    sizes: list[int] = []
    ctx = context(secrets)
    write = ctx.output.write
    monkeypatch.setattr(ctx.output, "write", lambda data: (sizes.append(len(data)), write(data)))
    await job.run({"method": "GET", "url": server.url("/bomb")}, ctx)
    assert max(sizes) <= http_call.DECODE_STEP_BYTES
    assert ctx.output.tail().endswith("[wf: stopped reading the response at 8,388,608 bytes]\n")


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, gzip", "compress"])
async def test_an_encoding_not_decoded_fails_not_retryable(job, server, secrets, encoding):
    server.route("/enc/other", 200, b"\x8b\x01\x80hello\x03", {"Content-Encoding": encoding})
    err = await failure(job, {"method": "GET", "url": server.url("/enc/other")}, ctx := context(secrets))
    assert "Content-Encoding" in err.message and repr(encoding) in err.message and not err.retryable
    assert ctx.output.total == 0
    # no body: nothing to decode, no failure
    await job.run({"method": "HEAD", "url": server.url("/enc/other")}, context(secrets))


async def test_a_body_that_does_not_decode_fails(job, server, secrets):
    server.route("/enc/broken", 200, b"this is not gzip at all", {"Content-Encoding": "gzip"})
    err = await failure(job, {"method": "GET", "url": server.url("/enc/broken")}, context(secrets))
    assert "does not decode" in err.message and "gzip" in err.message and not err.retryable
