"""Register name: "allowUrls"

Settings:
    "Prefixes": the URLs a WorkReq of this name may call with `http`, at least one, each an http or
        https URL without a query, user:password@ or #fragment, like
        ["https://deploy.example/", "http://10.0.0.7:8080/health"]
    "Secrets" (optional): the runner's secrets a job may send to those URLs (a `headers` value or
        the `body` that is exactly "secret:NAME"), each a secret's name or a glob pattern of names
        (`*`, `?`, `[abc]`; case-sensitive), written without "secret:", like ["DEPLOY_TOKEN"] or
        ["DEPLOY_*"]; none by default. The `http` job's Authorization header must name a secret,
        so an authenticated call needs its secret listed here, like
        {"Prefixes": ["https://lb.example/api/"], "Secrets": ["LB_TOKEN"]}.

Result:
    Violated by any job that this policy must allow (`http`, and any job whose `allowed_by` is
    "allowUrls") whose `url` is not under a prefix. Both are first normalized as `http` does (scheme
    and host lower case, a default port dropped); then the scheme, host and port must be equal and
    the URL's path must start with the prefix's path on a segment boundary: "https://a/api" allows
    "https://a/api", "https://a/api/x" and "https://a/api?q=1", not "https://a/apix";
    "https://deploy.example/" never allows "https://deploy.example.evil.com/",
    "https://deploy.example@evil.com/" or "https://deploy.example:8443/". Paths are compared as
    given (case-sensitive, nothing decoded); a path segment "..;x" or ".;x" is refused. Violated
    too by such a job whose `body` or any `headers` value names a secret ("secret:NAME") that
    "Secrets" does not match (or whose `headers` is not a JSON object). The reason names the
    block, the job and the URL, and lists the prefixes (or names the secrets refused, never a
    value, and lists "Secrets"). A job that needs this policy is denied outright when its WorkReq
    name has none (default-deny).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec

from schemas import WorkReq
from services.jobs import ArgError, JobRegistry
from services.jobs.http_call import parse_url
from services.jobs.output import SECRET_PREFIX

from ..vocabulary import (
    Check,
    ConfigError,
    PolicyViolation,
    guarded_jobs,
    guarded_uses,
    json_object_pairs,
    parse_settings,
)
from .allow_commands import secret_allowed, secret_patterns

SHOWN_MAX = 200


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    Prefixes: list[str]
    Secrets: list[str] = []


@dataclass(frozen=True)
class UrlPrefix:
    text: str  # normalized
    scheme: str
    netloc: str
    path: str

    def allows(self, scheme: str, netloc: str, path: str) -> bool:
        if (scheme, netloc) != (self.scheme, self.netloc) or not path.startswith(self.path):
            return False
        return self.path.endswith("/") or len(path) == len(self.path) or path[len(self.path)] == "/"


def _split(normalized: str) -> tuple[str, str, str, str]:
    parts = urlsplit(normalized)
    return parts.scheme, parts.netloc, parts.path, parts.query


def _prefix(policy: str, n: int, text: str) -> UrlPrefix:
    try:
        normalized = parse_url(text, "prefix")
    except ArgError as err:
        raise ConfigError(f"policy {policy!r}: Prefixes[{n}]: {err.message}") from None
    scheme, netloc, path, query = _split(normalized)
    if query or "?" in text:
        raise ConfigError(f"policy {policy!r}: Prefixes[{n}]: a prefix must not have a ?query, got {text!r}")
    if _dot_segment_with_params(path):
        raise ConfigError(f"policy {policy!r}: Prefixes[{n}]: a prefix must not hold a '.;' or '..;' segment")
    return UrlPrefix(normalized, scheme, netloc, path)


def _dot_segment_with_params(path: str) -> bool:
    """A segment like "..;x": some servers drop the ";x" and then follow the ".."."""
    return any(seg.split(";", 1)[0] in (".", "..") for seg in path.split("/"))


def _secrets_named(args: dict[str, str]) -> list[str] | None:
    """The names of the secrets the job would send (`body`, every `headers` value, duplicate JSON
    keys included), None when `headers` is not a JSON object."""
    values: list[object] = [args["body"]] if "body" in args else []
    if "headers" in args:
        try:
            values.extend(value for _, value in json_object_pairs(args["headers"]))
        except ValueError:
            return None
    return [v[len(SECRET_PREFIX):] for v in values if isinstance(v, str) and v.startswith(SECRET_PREFIX)]


def _shown(url: str) -> str:
    return repr(url if len(url) <= SHOWN_MAX else url[:SHOWN_MAX] + "...")


class AllowUrls:
    name = "allowUrls"

    def build(self, settings: dict[str, Any], jobs: JobRegistry) -> Check:
        parsed: Settings = parse_settings(self.name, Settings, settings)
        if not parsed.Prefixes:
            raise ConfigError(f"policy {self.name!r}: Prefixes is empty; list at least one URL prefix")
        prefixes = tuple(_prefix(self.name, n, text) for n, text in enumerate(parsed.Prefixes))
        secrets = secret_patterns(f"policy {self.name!r}", parsed.Secrets)
        secrets_listing = ", ".join(secrets) or "none"
        listing = ", ".join(p.text for p in prefixes)
        guarded = guarded_jobs(jobs, self.name)

        def refuse(where: str, url: str, why: str) -> PolicyViolation:
            return PolicyViolation(f"{where}: URL {_shown(url)} {why} (allowed: {listing})")

        def check(req: WorkReq) -> None:
            for where, job in guarded_uses(req, guarded):
                url = job.args.get("url", "")
                try:
                    scheme, netloc, path, _ = _split(parse_url(url))
                except ArgError as err:
                    raise refuse(where, url, f"is not allowed: {err.message}") from None
                if _dot_segment_with_params(path):
                    raise refuse(where, url, "is not allowed: it holds a '.;' or '..;' path segment")
                if not any(p.allows(scheme, netloc, path) for p in prefixes):
                    raise refuse(where, url, "is not under an allowed prefix")
                named = _secrets_named(job.args)
                if named is None:
                    raise PolicyViolation(f"{where}: URL {_shown(url)}: headers not allowed: not a JSON object")
                refused = sorted({name for name in named if not secret_allowed(name, secrets)})
                if refused:
                    shown = ", ".join(repr(name[:100]) for name in refused[:10])
                    raise PolicyViolation(f"{where}: URL {_shown(url)}: secret(s) {shown} not allowed "
                                          f"(allowed secrets: {secrets_listing})")

        return check
