"""The http job verifies certificates: against the bundled CAs, plus the runner's WF_HTTP_CA_FILE
(an internal CA); never against the runner's SSL_CERT_FILE (its environment is not read)."""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.jobs import JobContext, JobError
from services.jobs.http_call import HttpJob
from services.jobs.output import Output


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for that address: (url, cert)."""
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=wf-test", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/health", cert
    server.shutdown()
    server.server_close()


def ctx() -> JobContext:
    return JobContext(workflow_id="w", block=0, job=0, attempt=1, time_scale=1.0, output=Output())


async def test_an_unknown_ca_is_refused_not_retried(https, monkeypatch):
    url, cert = https
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the runner's environment is not read
    with pytest.raises(JobError) as err:
        await HttpJob(environ={}).run({"method": "GET", "url": url}, ctx())
    assert "does not verify" in err.value.message and not err.value.retryable


async def test_the_runners_ca_file_is_trusted(https):
    url, cert = https
    context = ctx()
    await HttpJob(environ={"WF_HTTP_CA_FILE": str(cert)}).run(
        {"method": "GET", "url": url, "expect_json": "status=ok"}, context)
    assert '"ok"' in context.output.tail()


async def test_an_unusable_ca_file_fails_the_job_saying_so(https, tmp_path):
    url, _ = https
    with pytest.raises(JobError, match="WF_HTTP_CA_FILE"):
        await HttpJob(environ={"WF_HTTP_CA_FILE": str(tmp_path / "missing.pem")}).run({"method": "GET", "url": url}, ctx())
