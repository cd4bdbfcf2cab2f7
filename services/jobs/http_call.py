"""Register name: "http"

Args:
    "method"(mandatory): GET, HEAD, POST, PUT, PATCH or DELETE (upper case), like "GET"
    "url"(mandatory): an http:// or https:// URL, like "https://deploy.example/api/v1/restart?host=aa01".
        No user:password@, no #fragment, no "." or ".." path segment, no encoded dot, slash or
        backslash, no white space or control character. It is normalized (scheme and host lower
        case, a default port dropped, an empty path made "/") and exactly that URL is called: the
        `allowUrls` policy of the WorkReq's name compares its prefixes with that same form.
    "body"(optional): the request's body, text of at most 1 MiB (UTF-8), like "{\\"drain\\": true}";
        or exactly "secret:NAME" to send a secret of the runner. No Content-Type is added: name
        one in "headers".
    "headers"(optional): a JSON object of name -> string in a string, like
        "{\\"Content-Type\\": \\"application/json\\", \\"Authorization\\": \\"secret:DEPLOY_TOKEN\\"}".
        Names (any case): Accept, Content-Type, Authorization, User-Agent, If-Match, If-None-Match,
        X-Request-Id and any name starting with "X-" (never Host, Cookie, Content-Length,
        Transfer-Encoding, Connection, Accept-Encoding or Proxy-*); at most 32, each value at most 8 KiB of printable
        ASCII (no CR, LF or other control character). A value that is exactly "secret:NAME" is
        replaced by that secret on the runner; Authorization's must be one (a credential never goes
        into a WorkReq). The User-Agent is "wf-http/1" unless given.
    "expect_status"(optional): the statuses that count as success, codes and classes separated by
        commas, like "200,204" or "2xx" or "2xx,304" (default "2xx"). A 3xx is a status like any
        other: redirects are never followed.
    "expect_json"(optional): "path=value", like "status=ok", "checks.db=green", "items.0.state=up" or
        "count=3": the body must be JSON (at most 1 MiB) and the value at the dotted path (a list's
        items by their index, from 0) must equal `value`: as JSON when `value` parses as JSON
        ("count=3" wants the number 3, "up=true" the boolean true, "name=\\"x\\"" the string x), and
        otherwise, or when the found value is a string equal to `value` as written, as a string.
        Not with HEAD. Checked only after the status was as expected.
    "timeout"(optional): whole seconds from 1 to 3,600 for the whole call, connection to last
        byte of the body, like "10" (default 30). Real seconds: `--time-scale` does not apply.
    "attempts"(optional): how many times to try in all, from 1 to 10, like "1" (default 3).
    "fatal"(optional): "true" or "false" (default "false"): whether a failure for good is fatal (the
        rest of the Block is cancelled and no later Block starts): "true" makes the call a gate,
        like a health check that must pass before the next block.

Result:
    Calls the URL once per attempt and completes when the status is one of `expect_status` and,
    if given, `expect_json` holds. A health check that gates the next block:
    {"name": "http", "args": {"method": "GET", "url": "http://aa01:8080/health",
     "expect_json": "status=ok", "fatal": "true"}}.

Retries:
    Tried again (up to `attempts`, waiting 1 s, 2 s, 4 s, ... between attempts) when the call
    could not connect (refused, unreachable, DNS), the connection broke, it timed out, or the
    answer was 5xx, 429 or 408 (unless `expect_status` lists it), or `expect_json` did not hold (the
    path missing or its value another: a service coming back may answer {"status": "starting"},
    so a health check with "attempts": "5" polls for about 15 s). Not tried again: another
    unexpected status (the error names it and the URL), a body that is not JSON where
    `expect_json` needs it, a TLS certificate that does not verify, a secret not set on the runner. What is safe to retry: GET, HEAD, PUT and DELETE are idempotent
    by HTTP's rules; a POST or PATCH that timed out or lost its connection may have been done
    already, so give it "attempts": "1" unless the service ignores duplicates (an X-Request-Id it
    deduplicates on, for one). A refused connection never reached the service.

Output:
    The response body, as it arrives (with the `wf logs` and terminal-event bounds of every job's
    output), secrets redacted; at most 64 MiB of it is read. The call asks for it uncompressed
    ("Accept-Encoding: identity"); a server that compresses it anyway with gzip or deflate has it
    decompressed a bounded step at a time (64 MiB of it at most, so a small "zip bomb" costs the
    runner no memory); another Content-Encoding (br, zstd, ...) fails the job, not tried again. The log has the method, the URL (secrets redacted) and the status,
    never a header value or a body.

No redirects, no proxy: a 3xx is never followed (it could leave the allowed prefix), and the
runner's environment is not read (no HTTP_PROXY / HTTPS_PROXY, no .netrc, no SSL_CERT_FILE):
certificates are verified against the bundled CA list (certifi), plus the runner's
WF_HTTP_CA_FILE (a PEM file of CA certificates, for services behind an internal CA) when set. Cancel and emergency stop abandon
the call at once and close its connection.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import certifi
import httpx

from . import ArgError, JobContext, JobError, parse_fatal, parse_whole_number
from .output import SecretError, secret_name

_BAD_IN_URL = re.compile(r"[\x00-\x20\x7f\\\\]|%2e|%2f|%5c|%00", re.IGNORECASE)

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
MAX_BODY_BYTES = 1024 * 1024  # the request body
MAX_JSON_BYTES = 1024 * 1024  # what expect_json reads of the response
MAX_READ_BYTES = 64 * 1024 * 1024  # what is read of a response at all (Output keeps only its end)
DECODE_STEP_BYTES = 64 * 1024  # the most a compressed body's decoding gives at once
DECODED_ENCODINGS = ("gzip", "x-gzip", "deflate")  # a Content-Encoding the job undoes; others fail the job
MAX_HEADERS = 32
MAX_HEADER_VALUE = 8 * 1024
MAX_EXPECT_JSON = 4 * 1024
DEFAULT_TIMEOUT_S = 30
MAX_TIMEOUT_S = 3600
DEFAULT_ATTEMPTS = 3
MAX_ATTEMPTS = 10
USER_AGENT = "wf-http/1"
ALLOWED_HEADERS = frozenset({"accept", "content-type", "authorization", "user-agent", "if-match", "if-none-match",
                             "x-request-id"})
RETRY_STATUSES = frozenset({408, 429})
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,99}")
_BAD_IN_HEADER_VALUE = re.compile(r"[^\x09\x20-\x7e]")  # CR, LF, other controls, non-ASCII
_STATUS_RE = re.compile(r"([1-5][0-9][0-9])|([1-5])xx", re.IGNORECASE)
_PATH_SEGMENT_RE = re.compile(r"[^.=\s\x00-\x1f\x7f]{1,256}")
_INDEX_RE = re.compile(r"0|[1-9][0-9]{0,8}")


def parse_url(text: str, arg: str = "url") -> str:
    """A URL a job may call, normalized (scheme and host lower case, a default port dropped, an empty
    path made "/"): http or https, a host, no user:password@, no #fragment, no "." or ".." path
    segment, no encoded dot, slash or backslash, no white space or control character. ArgError
    otherwise. The allowUrls policy compares prefixes of exactly this form, so what is checked is
    what is called (a redirect is never followed)."""
    if _BAD_IN_URL.search(text):
        raise ArgError(arg, f"{arg} {text[:200]!r} holds white space, a control character, a backslash or an "
                       "encoded dot, slash or backslash")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ArgError(arg, f"{arg} {text[:200]!r} is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ArgError(arg, f"{arg} must be http:// or https://, got {text[:200]!r}")
    if not parts.hostname:
        raise ArgError(arg, f"{arg} {text[:200]!r} has no host")
    if "@" in parts.netloc:
        raise ArgError(arg, f"{arg} must not hold user:password@ (name a secret in a header instead)")
    if parts.fragment or text.endswith("#"):
        raise ArgError(arg, f"{arg} must not have a #fragment")
    segments = parts.path.split("/")
    if any(seg in (".", "..") for seg in segments):
        raise ArgError(arg, f"{arg} must not hold a '.' or '..' path segment")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[scheme]
    netloc = host if port in (None, default) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


# ------------------------------------------------------------------ the other args


def _check_secret_ref(arg: str, value: str) -> None:
    try:
        secret_name(value)
    except SecretError as exc:
        raise ArgError(arg, f"{arg}: {exc}") from None


def parse_method(text: str) -> str:
    if text not in METHODS:
        raise ArgError("method", f"method must be one of {', '.join(METHODS)}, got {text[:40]!r}")
    return text


def parse_body(text: str) -> str:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ArgError("body", "body is not valid text (a lone surrogate)") from None
    if size > MAX_BODY_BYTES:
        raise ArgError("body", f"body is longer than {MAX_BODY_BYTES:,} bytes")
    _check_secret_ref("body", text)
    return text


def parse_headers(text: str) -> dict[str, str]:
    """The `headers` arg: a JSON object of allowed names -> strings (values unresolved)."""
    try:
        headers = json.loads(text)
    except (ValueError, RecursionError):
        raise ArgError("headers", 'headers must be a JSON object in a string, like "{\\"Accept\\": \\"application/json\\"}"') from None
    if not isinstance(headers, dict):
        raise ArgError("headers", "headers must be a JSON object of name -> string")
    if len(headers) > MAX_HEADERS:
        raise ArgError("headers", f"headers has {len(headers)} names; at most {MAX_HEADERS}")
    seen: set[str] = set()
    for name, value in headers.items():
        shown = name if len(name) <= 40 else name[:40] + "..."
        if not _HEADER_NAME_RE.fullmatch(name):
            raise ArgError("headers", f"header name {shown!r} is not a header name (letters, digits and '-')")
        lower = name.lower()
        if lower not in ALLOWED_HEADERS and not lower.startswith("x-"):
            raise ArgError("headers", f"header {shown!r} is not allowed (allowed: Accept, Content-Type, Authorization, "
                           "User-Agent, If-Match, If-None-Match, X-Request-Id and X-*)")
        if lower in seen:
            raise ArgError("headers", f"header {shown!r} is given twice")
        seen.add(lower)
        if not isinstance(value, str):
            raise ArgError("headers", f"header {shown!r}: the value must be a string")
        if len(value) > MAX_HEADER_VALUE:
            raise ArgError("headers", f"header {shown!r}: the value is longer than {MAX_HEADER_VALUE:,} characters")
        if _BAD_IN_HEADER_VALUE.search(value):
            raise ArgError("headers", f"header {shown!r}: the value holds a CR, LF, other control character or non-ASCII character")
        _check_secret_ref("headers", value)
        if lower == "authorization" and not value.startswith("secret:"):
            raise ArgError("headers", "header 'Authorization' must be \"secret:NAME\" (a secret of the runner): "
                           "a credential never goes into a WorkReq")
    return headers


def parse_expect_status(text: str) -> Callable[[int], bool]:
    """`expect_status`: "200,204", "2xx", "2xx,304" -> whether a status is one of them."""
    codes: set[int] = set()
    classes: set[int] = set()
    entries = text.split(",")
    if len(entries) > 50:
        raise ArgError("expect_status", "expect_status has more than 50 entries")
    for entry in entries:
        entry = entry.strip()
        match = _STATUS_RE.fullmatch(entry)
        if match is None:
            shown = entry if len(entry) <= 40 else entry[:40] + "..."
            raise ArgError("expect_status", f"expect_status must be status codes (100-599) or classes like 2xx, "
                           f"separated by commas, like \"200,204\"; got {shown!r}")
        if match.group(1):
            codes.add(int(match.group(1)))
        else:
            classes.add(int(match.group(2)))
    return lambda status: status in codes or status // 100 in classes


@dataclass(frozen=True)
class JsonExpectation:
    path: tuple[str, ...]
    text: str  # the expected value as written

    @property
    def path_text(self) -> str:
        return ".".join(self.path)

    def expected(self) -> tuple[bool, object]:
        try:
            return True, json.loads(self.text)
        except (ValueError, RecursionError):
            return False, None

    def matches(self, found: object) -> bool:
        if isinstance(found, str) and found == self.text:
            return True
        is_json, wanted = self.expected()
        return is_json and _same_json(found, wanted)


def parse_expect_json(text: str) -> JsonExpectation:
    """`expect_json`: "path=value" with a dotted path."""
    if len(text) > MAX_EXPECT_JSON:
        raise ArgError("expect_json", f"expect_json is longer than {MAX_EXPECT_JSON:,} characters")
    path, eq, value = text.partition("=")
    segments = path.split(".")
    if not eq or not path or not all(_PATH_SEGMENT_RE.fullmatch(seg) for seg in segments):
        shown = text if len(text) <= 60 else text[:60] + "..."
        raise ArgError("expect_json", "expect_json must be \"path=value\" with a dotted path (no spaces), like "
                       f"\"status=ok\" or \"checks.db=green\"; got {shown!r}")
    return JsonExpectation(tuple(segments), value)


def _same_json(a: object, b: object) -> bool:
    """JSON equality: true is not 1, 1 is 1.0, objects and lists compared item by item."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


_MISSING = object()


def _lookup(doc: object, path: tuple[str, ...]) -> object:
    for seg in path:
        if isinstance(doc, dict):
            doc = doc.get(seg, _MISSING)
        elif isinstance(doc, list) and _INDEX_RE.fullmatch(seg) and int(seg) < len(doc):
            doc = doc[int(seg)]
        else:
            return _MISSING
        if doc is _MISSING:
            return _MISSING
    return doc


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    body: str | None
    headers: dict[str, str]
    expect_status: Callable[[int], bool]
    expect_status_text: str
    expect_json: JsonExpectation | None
    timeout_s: int
    attempts: int
    fatal: bool


def parse_args(args: Mapping[str, str]) -> Call:
    method = parse_method(args["method"])
    url = parse_url(args["url"])
    body = parse_body(args["body"]) if "body" in args else None
    headers = parse_headers(args["headers"]) if "headers" in args else {}
    status_text = args.get("expect_status", "2xx")
    expect_status = parse_expect_status(status_text)
    expect_json = parse_expect_json(args["expect_json"]) if "expect_json" in args else None
    if expect_json is not None and method == "HEAD":
        raise ArgError("expect_json", "expect_json needs a body: not with method HEAD")
    timeout_s = parse_whole_number("timeout", args.get("timeout", str(DEFAULT_TIMEOUT_S)), 1, MAX_TIMEOUT_S)
    attempts = parse_whole_number("attempts", args.get("attempts", str(DEFAULT_ATTEMPTS)), 1, MAX_ATTEMPTS)
    fatal = parse_fatal(args.get("fatal", "false"))
    return Call(method, url, body, headers, expect_status, status_text, expect_json, timeout_s, attempts, fatal)


# ------------------------------------------------------------------ the job


def _short(text: str, size: int = 200) -> str:
    return text if len(text) <= size else text[:size] + "..."


def _tls_verify_failed(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLCertVerificationError):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


class UnsupportedEncoding(Exception):
    """The response's Content-Encoding is not one the job decodes."""


class BodyDecoder:
    """A response body's Content-Encoding undone a bounded step at a time: `feed(raw)` yields pieces of
    at most DECODE_STEP_BYTES, so a few KB of gzip that inflate to GBs never become one big buffer.
    No encoding (or "identity"): the bytes as they are. zlib.error for a body that does not decode."""

    def __init__(self, content_encoding: str) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        self.encoding = ", ".join(codings)
        if len(codings) > 1 or (codings and codings[0] not in DECODED_ENCODINGS):
            self.unsupported = True
            return
        self.unsupported = False
        self._gzip = bool(codings) and codings[0] != "deflate"
        self._d = zlib.decompressobj(zlib.MAX_WBITS | 16) if self._gzip else zlib.decompressobj() if codings else None
        self._head: bytearray | None = bytearray()  # deflate: input until the first output, to retry it raw
        self._ended = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        if self.unsupported:
            raise UnsupportedEncoding(self.encoding)
        if self._d is None:
            yield data
            return
        if self._head is not None and len(self._head) < 1024:
            self._head += data
        else:
            self._head = None
        while not self._ended:
            try:
                out = self._d.decompress(data, DECODE_STEP_BYTES)
            except zlib.error:
                if self._gzip or self._head is None:
                    raise
                # "deflate" sent without zlib's header (as some servers do): the raw stream, from its start
                self._d, data, self._head = zlib.decompressobj(-zlib.MAX_WBITS), bytes(self._head), None
                continue
            data = self._d.unconsumed_tail
            if out:
                self._head = None
                yield out
            if self._d.eof:
                rest = self._d.unused_data
                if self._gzip and rest[:2] == b"\x1f\x8b":  # another gzip member follows
                    self._d, data = zlib.decompressobj(zlib.MAX_WBITS | 16), rest
                    continue
                self._ended = True  # anything after the end of the stream is ignored
            elif not data and len(out) < DECODE_STEP_BYTES:
                return  # all input taken and no output pending: wait for more


class HttpJob:
    name = "http"
    allowed_by = "allowUrls"  # default-deny: only where the WorkReq name's allowUrls policy allows it
    mandatory_args = frozenset({"method", "url"})
    optional_args = frozenset({"body", "headers", "expect_status", "expect_json", "timeout", "attempts", "fatal"})
    max_attempts = MAX_ATTEMPTS  # the most `attempts` allows; max_attempts_for gives each call's own
    retry_base_s = 1.0

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """`environ`: the runner's settings (Settings.job_settings); none: WF_HTTP_CA_FILE unset."""
        env = environ or {}
        # a CA of your own (an internal one) trusted besides the bundled list: WF_HTTP_CA_FILE (PEM)
        self.ca_file = env.get("WF_HTTP_CA_FILE", "")
        self._context: ssl.SSLContext | None = None

    def _verify(self) -> ssl.SSLContext:
        """One TLS context for every call (building one loads the CA bundle: about 15 ms of the event
        loop), made at the first call: the bundled CAs, plus WF_HTTP_CA_FILE when set."""
        if self._context is None:
            context = ssl.create_default_context(cafile=certifi.where())
            if self.ca_file:
                context.load_verify_locations(cafile=self.ca_file)
            self._context = context
        return self._context

    def validate(self, args: Mapping[str, str]) -> None:
        parse_args(args)

    def max_attempts_for(self, args: Mapping[str, str]) -> int:
        """The call's `attempts` (the default when absent; 1 when unreadable: never retry blindly)."""
        try:
            return parse_whole_number("attempts", args.get("attempts", str(DEFAULT_ATTEMPTS)), 1, MAX_ATTEMPTS)
        except ArgError:
            return 1

    async def run(self, args: Mapping[str, str], ctx: JobContext) -> None:
        try:
            call = parse_args(args)
        except ArgError as exc:
            raise JobError(f"bad argument: {exc.message}", fatal=True) from None
        redact = ctx.secrets.redact
        shown_url = redact(call.url)
        what = f"{call.method} {shown_url}"

        def fail(message: str, *, retryable: bool = False) -> JobError:
            # a retryable failure on the last attempt is a failure for good (whatever the runner's limit)
            retry = retryable and ctx.attempt < call.attempts
            if retryable and not retry:
                message += f" (attempt {ctx.attempt} of {call.attempts}: no more tries)"
            return JobError(_short(redact(message), 1000), fatal=call.fatal, retryable=retry)

        try:
            # uncompressed, please: a compressed body is undone by BodyDecoder, bounded, if it comes anyway
            headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
            for name, value in call.headers.items():
                if name.lower() == "user-agent":
                    headers.pop("User-Agent", None)
                resolved = ctx.secrets.resolve(value)
                if _BAD_IN_HEADER_VALUE.search(resolved):
                    raise fail(f"{what}: header {name!r}: its secret holds a CR, LF, other control character or non-ASCII character")
                headers[name] = resolved
            content = ctx.secrets.resolve(call.body).encode("utf-8") if call.body is not None else None
        except SecretError as exc:
            raise fail(f"{what}: {exc}") from None

        try:
            verify = self._verify()
        except (OSError, ssl.SSLError) as exc:
            raise fail(f"WF_HTTP_CA_FILE {self.ca_file}: unusable: {exc}") from None
        ctx.log.info("http_call", method=call.method, url=shown_url, attempt=ctx.attempt)
        started = time.perf_counter()
        status = 0
        reason = ""
        received = 0  # bytes of the body (decoded)
        raw_received = 0  # bytes as they came (compressed)
        json_buf = bytearray()
        json_over = False
        cut = False
        unsupported = ""
        undecodable = ""
        try:
            async with asyncio.timeout(call.timeout_s):
                async with httpx.AsyncClient(trust_env=False, follow_redirects=False, verify=verify,
                                             timeout=httpx.Timeout(call.timeout_s)) as client:
                    async with client.stream(call.method, call.url, headers=headers, content=content) as resp:
                        status, reason = resp.status_code, resp.reason_phrase
                        decoder = BodyDecoder(resp.headers.get("content-encoding", ""))
                        # raw: httpx would decode a whole network read at once (250 KB of gzip -> 64 MB)
                        async for raw in resp.aiter_raw():
                            raw_received += len(raw)
                            try:
                                for chunk in decoder.feed(raw):
                                    chunk = chunk[:MAX_READ_BYTES - received]
                                    received += len(chunk)
                                    ctx.output.write(chunk)
                                    if call.expect_json is not None and not json_over:
                                        if len(json_buf) + len(chunk) > MAX_JSON_BYTES:
                                            json_over = True
                                        else:
                                            json_buf += chunk
                                    if received >= MAX_READ_BYTES:
                                        cut = True
                                        break
                                    if decoder.encoding:
                                        await asyncio.sleep(0)  # let cancel and other jobs in between steps
                            except UnsupportedEncoding:
                                unsupported = decoder.encoding
                                break
                            except zlib.error as exc:
                                undecodable = f"{decoder.encoding}: {exc}"
                                break
                            if cut or raw_received >= MAX_READ_BYTES:
                                cut = True
                                break
        except TimeoutError:
            raise fail(f"{what}: no complete answer within {call.timeout_s} s (timeout)", retryable=True) from None
        except httpx.TimeoutException as exc:
            raise fail(f"{what}: timed out ({type(exc).__name__}, timeout {call.timeout_s} s)", retryable=True) from None
        except httpx.ConnectError as exc:
            if _tls_verify_failed(exc):
                raise fail(f"{what}: the TLS certificate does not verify: {exc}") from None
            raise fail(f"{what}: could not connect: {exc or type(exc).__name__}", retryable=True) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise fail(f"{what}: the connection failed ({type(exc).__name__}): {exc}", retryable=True) from None
        except Exception as exc:  # httpx.HTTPError, httpx.InvalidURL, ...: redacted, never a crash's repr
            raise fail(f"{what}: {type(exc).__name__}: {exc}") from None
        if cut:
            ctx.output.write(f"\n[wf: stopped reading the response at {MAX_READ_BYTES:,} bytes]\n")
        ctx.log.info("http_answered", method=call.method, url=shown_url, status=status, bytes=received,
                     raw_bytes=raw_received, duration_ms=round((time.perf_counter() - started) * 1000, 2))
        if unsupported:
            raise fail(f"{what} answered {status} with a body in Content-Encoding {_short(unsupported, 100)!r}, which the "
                       f"http job does not decode (it asks for identity; it decodes {', '.join(DECODED_ENCODINGS)})")
        if undecodable:
            raise fail(f"{what} answered {status} with a body that does not decode ({_short(undecodable, 300)})")

        if not call.expect_status(status):
            message = f"{what} answered {status} {reason}".rstrip() + f"; expected {call.expect_status_text}"
            raise fail(message, retryable=status >= 500 or status in RETRY_STATUSES)
        if call.expect_json is not None:
            self._check_json(call.expect_json, bytes(json_buf), json_over, what, fail)

    @staticmethod
    def _check_json(expect: JsonExpectation, body: bytes, over: bool, what: str,
                    fail: Callable[..., JobError]) -> None:
        if over:
            raise fail(f"{what}: expect_json {expect.path_text}: the response body is over {MAX_JSON_BYTES:,} bytes")
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise fail(f"{what}: expect_json {expect.path_text}={_short(expect.text)}: the response body is not JSON") from None
        found = _lookup(doc, expect.path)
        if found is _MISSING:
            got = "nothing (no such path)"
        else:
            if expect.matches(found):
                return
            got = _short(json.dumps(found))
        # a service coming back may answer {"status": "starting"}: with `attempts`, a check polls
        raise fail(f"{what}: expect_json {expect.path_text}: expected {_short(expect.text)}, got {got}", retryable=True)
