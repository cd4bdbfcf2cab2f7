"""Register name: "allowCommands"

Settings:
    "Commands": the commands a WorkReq of this name may run with `exec`, at least one, each
        {"Program": "/usr/bin/systemctl", "Args": ["restart", "app-*"], "Env": ["LANG"]}, like
        [{"Program": "/bin/echo", "Args": ["*"]},
         {"Program": "/usr/bin/systemctl", "Args": ["restart", "app-*"]},
         {"Program": "/srv/app/bin/deploy", "Args": ["--release", "*"], "Env": ["DEPLOY_TOKEN", "LANG"],
          "Secrets": ["DEPLOY_TOKEN"], "Cwd": ["/srv/app", "/srv/releases/*"]}]
        "Program": the program's absolute, normalized path; argv[0] must equal it exactly (no PATH
            look-up, no symbolic-link or ".." resolution: "/usr/bin/echo" is not "/bin/echo").
        "Args": one glob pattern per argument (`*` matches anything, "/" included; `?` one
            character; `[abc]` one of them; case-sensitive), so the command has exactly that many
            arguments; `["*"]` alone allows any arguments (any number); `[]` allows none. An
            argument that names a runner's secret (`secret:NAME`) matches only a pattern that
            starts `secret:` too, like "secret:DEPLOY_TOKEN" or "secret:*": `*` and `["*"]` never
            pass a secret to a program.
        "Env" (optional): the environment variable names the command may be given in `env`,
            like ["LANG", "APP_TOKEN"]; none by default.
        "Secrets" (optional): the runner's secrets an `env` value may name (`"secret:NAME"`), each a
            secret's name or a glob pattern of names (`*`, `?`, `[abc]`; case-sensitive), written
            without "secret:", like ["DEPLOY_TOKEN"] or ["DEPLOY_*"]; none by default, so an `env`
            value "secret:NAME" is refused unless NAME matches. (Secrets in argv follow "Args".)
        "Cwd" (optional): the directories the command may be given as `cwd`, each an absolute,
            normalized path, like "/srv/app", or a glob pattern of them (`*` matches anything,
            "/" included: "/srv/releases/*" allows every directory below /srv/releases, at any
            depth, not /srv/releases itself); case-sensitive, compared as text (no symbolic-link
            resolution). None by default: a job with a `cwd` arg is refused unless it is listed; a
            job without one runs in the runner's own directory, which is always fine.

Result:
    Violated by any job that this policy must allow (`exec`, and any job whose `allowed_by` is
    "allowCommands") whose argv (exactly as `exec` parses it: a `secret:NAME` element is matched as
    that text) matches no entry, or for which no single matching entry allows all of its `cwd` (an
    absolute, normalized path: "/srv/app/../etc" and "/srv/app/" are refused), the names of its
    `env` and every secret an `env` value names. The reason names the block, the job and the
    command, and what was not allowed (a cwd, env names, secrets' names: never a value) with what
    is. A job that needs this policy is denied outright when its WorkReq name has none
    (default-deny).
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import msgspec

from schemas import WorkReq
from services.jobs import ArgError, JobRegistry
from services.jobs.exec_cmd import parse_argv
from services.jobs.output import SECRET_NAME_RE, SECRET_PREFIX

from ..vocabulary import (
    Check,
    ConfigError,
    PolicyViolation,
    guarded_jobs,
    guarded_uses,
    json_object_pairs,
    parse_settings,
)

ANY_ARGS = ("*",)
_ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]*")  # as the exec job accepts them
# a secret's name (output.SECRET_NAME_RE) or a glob pattern of names
SECRET_PATTERN_RE = re.compile(r"[A-Za-z0-9_.*?\[\]!-]{1,200}")
SHOWN_MAX = 300
LISTED_MAX = 10


class CommandEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    Program: str
    Args: list[str]
    Env: list[str] = []
    Secrets: list[str] = []
    Cwd: list[str] = []


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    Commands: list[CommandEntry]


@dataclass(frozen=True)
class AllowedCommand:
    program: str
    args: tuple[str, ...]
    env: frozenset[str]
    secrets: tuple[str, ...] = ()
    cwd: tuple[str, ...] = ()

    def matches(self, argv: list[str]) -> bool:
        if argv[0] != self.program:
            return False
        rest = argv[1:]
        if self.args == ANY_ARGS:
            return not any(a.startswith(SECRET_PREFIX) for a in rest)
        return len(rest) == len(self.args) and all(_arg_matches(a, p) for a, p in zip(rest, self.args, strict=True))

    def allows_secret(self, name: str) -> bool:
        return secret_allowed(name, self.secrets)

    def allows_cwd(self, cwd: str) -> bool:
        return any(fnmatchcase(cwd, pattern) for pattern in self.cwd)

    def describe(self) -> str:
        return " ".join((self.program, *self.args))


def secret_allowed(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether a secret's name (already a well-formed name) matches one of `patterns`."""
    return bool(SECRET_NAME_RE.fullmatch(name)) and any(fnmatchcase(name, p) for p in patterns)


def secret_patterns(where: str, entries: list[str]) -> tuple[str, ...]:
    """`Secrets` as given, each a secret's name or a glob pattern of names; ConfigError otherwise."""
    for n, pattern in enumerate(entries):
        shown = repr(pattern[:100])
        if pattern.startswith(SECRET_PREFIX):
            raise ConfigError(f"{where}: Secrets[{n}] {shown}: write the secret's name without 'secret:'")
        if not SECRET_PATTERN_RE.fullmatch(pattern):
            raise ConfigError(f"{where}: Secrets[{n}] {shown} is not a secret's name or a glob pattern of names "
                              "(A-Z a-z 0-9 _ . - and * ? [ ] !)")
    return tuple(entries)


def _arg_matches(arg: str, pattern: str) -> bool:
    """A `secret:NAME` argument matches only a pattern that itself starts `secret:` (so `*` never
    hands a runner's secret to a program; `secret:DEPLOY_TOKEN` or `secret:*` must say so)."""
    if arg.startswith(SECRET_PREFIX) and not pattern.startswith(SECRET_PREFIX):
        return False
    return fnmatchcase(arg, pattern)


def _normalized_path(path: str) -> bool:
    """An absolute path with nothing to resolve: no "." or ".." segment, no "//", no trailing "/"."""
    return (path.startswith("/") and not path.startswith("//") and posixpath.normpath(path) == path
            and "\x00" not in path)


def _allowed_command(policy: str, n: int, entry: CommandEntry) -> AllowedCommand:
    where = f"policy {policy!r}: Commands[{n}]"
    if not entry.Program.startswith("/") or posixpath.normpath(entry.Program) != entry.Program:
        raise ConfigError(f"{where}: Program must be an absolute, normalized path, got {entry.Program!r}")
    if "\x00" in entry.Program or any("\x00" in a for a in entry.Args):
        raise ConfigError(f"{where}: Program and Args must not hold a NUL")
    bad_env = [name for name in entry.Env if not _ENV_NAME_RE.fullmatch(name)]
    if bad_env:
        raise ConfigError(f"{where}: Env holds {bad_env[0]!r}, which is not an environment variable name")
    for c, path in enumerate(entry.Cwd):
        if not _normalized_path(path):
            raise ConfigError(f"{where}: Cwd[{c}] must be an absolute, normalized path (or a glob pattern of "
                              f"them), like \"/srv/app\", got {path[:200]!r}")
    return AllowedCommand(entry.Program, tuple(entry.Args), frozenset(entry.Env),
                          secret_patterns(where, entry.Secrets), tuple(entry.Cwd))


def _listed(items: list[str] | set[str]) -> str:
    shown = sorted(items)
    text = ", ".join(repr(i[:100]) for i in shown[:LISTED_MAX])
    return text + (", ..." if len(shown) > LISTED_MAX else "")


def _env_issue(env_text: str, matching: list[AllowedCommand]) -> tuple[str | None, list[AllowedCommand]]:
    """(None, the entries that allow all of `env`) when one matching entry lists every name of `env`
    and every secret its values name, else (what is wrong, [])."""
    try:
        pairs = json_object_pairs(env_text)
    except ValueError:
        return "env is not a JSON object", []
    names = [name for name, _ in pairs]
    by_names = [a for a in matching if all(name in a.env for name in names)]
    if not by_names:
        permitted = set().union(*(a.env for a in matching))
        refused = {n for n in names if n not in permitted} or set(names)
        return (f"env name(s) {_listed(refused)} not allowed "
                f"(allowed env names: {', '.join(sorted(permitted)) or 'none'})"), []
    secrets = [v[len(SECRET_PREFIX):] for _, v in pairs if isinstance(v, str) and v.startswith(SECRET_PREFIX)]
    by_secrets = [a for a in by_names if all(a.allows_secret(s) for s in secrets)]
    if not by_secrets:
        refused = {s for s in secrets if not any(a.allows_secret(s) for a in by_names)} or set(secrets)
        permitted_patterns = sorted({p for a in by_names for p in a.secrets})
        return (f"env secret(s) {_listed(refused)} not allowed "
                f"(allowed secrets: {', '.join(permitted_patterns) or 'none'})"), []
    return None, by_secrets


def _cwd_issue(cwd: str, matching: list[AllowedCommand]) -> tuple[str | None, list[AllowedCommand]]:
    """(None, the entries that allow `cwd`) or (what is wrong, [])."""
    shown = repr(cwd if len(cwd) <= 200 else cwd[:200] + "...")
    if not _normalized_path(cwd):
        return f"cwd {shown} not allowed: it is not an absolute, normalized path", []
    allowing = [a for a in matching if a.allows_cwd(cwd)]
    if not allowing:
        permitted = sorted({p for a in matching for p in a.cwd})
        return f"cwd {shown} not allowed (allowed cwd: {', '.join(permitted) or 'none'})", []
    return None, allowing


def _shown(argv: list[str]) -> str:
    text = json.dumps(argv)
    return text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX] + "...]"


class AllowCommands:
    name = "allowCommands"

    def build(self, settings: dict[str, Any], jobs: JobRegistry) -> Check:
        parsed: Settings = parse_settings(self.name, Settings, settings)
        if not parsed.Commands:
            raise ConfigError(f"policy {self.name!r}: Commands is empty; list at least one command")
        allowed = tuple(_allowed_command(self.name, n, entry) for n, entry in enumerate(parsed.Commands))
        listing = "; ".join(a.describe() for a in allowed)
        guarded = guarded_jobs(jobs, self.name)

        def violation(where: str, what: str) -> PolicyViolation:
            return PolicyViolation(f"{where}: {what} (allowed: {listing})")

        def check(req: WorkReq) -> None:
            for where, job in guarded_uses(req, guarded):
                try:
                    argv = parse_argv(job.args.get("argv", ""))
                except ArgError as err:
                    raise violation(where, f"argv is not allowed: {err.message}") from None
                matching = [a for a in allowed if a.matches(argv)]
                if not matching:
                    raise violation(where, f"command {_shown(argv)} is not allowed")
                # one entry must allow the whole use: its cwd, env names and env secrets together
                if "cwd" in job.args:
                    issue, matching = _cwd_issue(job.args["cwd"], matching)
                    if issue:
                        raise PolicyViolation(f"{where}: command {_shown(argv)}: {issue}")
                if "env" in job.args:
                    issue, matching = _env_issue(job.args["env"], matching)
                    if issue:
                        raise PolicyViolation(f"{where}: command {_shown(argv)}: {issue}")

        return check
