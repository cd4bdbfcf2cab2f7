"""What a running job prints or receives, kept bounded, and the secrets it may use, never shown.

`Output` collects a job's stdout/stderr or response body as it arrives. It keeps the last
`FULL_BYTES` (what `wf logs ID BLOCK JOB` shows) and gives the last `TAIL_BYTES` for the job's
terminal event and its StatusResp entry (`output`). Every secret value the runner knows is replaced
by `[secret:NAME]` whenever the text is read, so a secret never leaves the runner, whichever part of
the output (or an error message) it appears in, as it is or as it appears JSON-escaped (an API echoing
a request), percent-encoded (a URL, a form) or in a Python repr (these forms are computed once per
change of the values, not per read). What was kept is redacted before it is cut to size, so a secret
that straddles the cut is hidden too. Once output was dropped from the front, the buffer's first
`longest() + 4` bytes (a margin: they may hold the tail of a secret whose head was dropped, which no
match can find) are redacted with the rest but never shown.

`Secrets`: a job arg whose whole value is `secret:NAME` names a secret; the runner resolves it from
its own secrets file (`WF_SECRETS_FILE`, a JSON object of name -> value, re-read when it changes) or
its environment (`WF_SECRET_<NAME>`). A WorkReq never holds a secret's value, only its name.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus

from services.common.settings import SECRET_SETTING_PREFIX, SECRETS_FILE_SETTING

TAIL_BYTES = 4 * 1024  # in the terminal event and the StatusResp job entry (contract: `output`)
FULL_BYTES = 256 * 1024  # kept for `wf logs`
SECRET_PREFIX = "secret:"
SECRET_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
SECRET_ENV_PREFIX = SECRET_SETTING_PREFIX  # WF_SECRET_<NAME> (services/common/settings.py)
SECRETS_FILE_ENV = SECRETS_FILE_SETTING
GIVEN_PER_NAME = 4  # values of one secret remembered after they were given to a job
LOOK_EVERY_S = 1.0  # how often redaction looks whether the secrets file changed
MIN_SECRET_LEN = 4  # shorter values are refused: redacting them would mangle every output


def output_key(wf_id: str, block: int, job: int) -> str:
    """A job's key in KV `wf_output` (its whole kept output: the runner writes it, `wf.api.logs` reads it)."""
    return f"{wf_id}.{block}.{job}"


def is_secret_setting(name: str) -> bool:
    """Whether an environment variable is one of the runner's secret settings (the secrets file or a
    secret): what only runners are given, and what a runner deletes from its environment once read."""
    return name == SECRETS_FILE_ENV or name.startswith(SECRET_ENV_PREFIX)


class SecretError(ValueError):
    """A secret is named badly, not set on this runner, or the secrets file is unusable."""


def secret_name(value: str) -> str | None:
    """The secret an arg names (`secret:NAME`), None for a plain value. ValueError if malformed."""
    if not value.startswith(SECRET_PREFIX):
        return None
    name = value[len(SECRET_PREFIX):]
    if not SECRET_NAME_RE.fullmatch(name):
        raise SecretError(f"{value!r} is not a secret's name: 'secret:' then 1-64 of A-Z a-z 0-9 _ . -")
    return name


class Secrets:
    """The runner's secrets: from `file` (JSON object name -> string) and `environ` (WF_SECRET_<NAME>)."""

    def __init__(self, file: Path | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.file = file
        self._environ = dict(environ or {})
        self._file_stamp: tuple[int, int] | None = None
        self._looked_at = float("-inf")
        self._from_file: dict[str, str] = {}
        # what redact() looks for, computed again only when the file's values change (the env is fixed)
        self._patterns_of: dict[str, str] | None = None
        self._given: dict[str, list[str]] = {}  # name -> values resolve() gave jobs (the last few)
        self._given_version = 0
        self._patterns_given = 0
        self._patterns: list[tuple[str, str]] = []
        self._longest = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Secrets:
        path = environ.get(SECRETS_FILE_ENV, "")
        env = {k[len(SECRET_ENV_PREFIX):]: v for k, v in environ.items() if k.startswith(SECRET_ENV_PREFIX)}
        return cls(Path(path) if path else None, env)

    def _load(self) -> dict[str, str]:
        if self.file is None:
            return self._from_file  # always {}: the same object, so redact() keeps its precomputed forms
        try:
            st = self.file.stat()
        except OSError as exc:
            raise SecretError(f"secrets file {self.file}: {exc.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._file_stamp:
            try:
                data = json.loads(self.file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise SecretError(f"secrets file {self.file}: unreadable: {exc}") from None
            if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
                raise SecretError(f"secrets file {self.file}: expected a JSON object of name -> string")
            self._from_file, self._file_stamp = data, stamp
        return self._from_file

    def _file_now(self) -> dict[str, str]:
        """The secrets file's entries, looked at once a second at most (redaction runs for every string
        of every log line of the runner); `resolve` always looks, and what it gave a job is always
        redacted. A file gone bad keeps the last good read: redaction must not stop."""
        now = time.monotonic()
        if now - self._looked_at >= LOOK_EVERY_S:
            self._looked_at = now
            with contextlib.suppress(SecretError):
                self._load()
        return self._from_file

    def resolve(self, value: str) -> str:
        """An arg's value: itself, or the secret it names. SecretError if that secret is not set."""
        name = secret_name(value)
        if name is None:
            return value
        found = {**self._environ, **self._load()}.get(name)
        if found is None:
            raise SecretError(f"secret {name!r} is not set on this runner (WF_SECRETS_FILE or {SECRET_ENV_PREFIX}{name})")
        if len(found) < MIN_SECRET_LEN:
            raise SecretError(f"secret {name!r} is shorter than {MIN_SECRET_LEN} characters; refused")
        # a value given to a job stays redacted after it is rotated out of the file (the job may
        # still print it): the last few values of each name are remembered
        given = self._given.setdefault(name, [])
        if found not in given:
            given.append(found)
            del given[:-GIVEN_PER_NAME]
            self._given_version += 1
        return found

    def _current(self) -> list[tuple[str, str]]:
        """(form, placeholder) for every known value and its escaped forms, longest first."""
        from_file = self._file_now()
        if from_file is not self._patterns_of or self._given_version != self._patterns_given:
            patterns: dict[str, str] = {}
            for name, values in self._given.items():
                for value in values:
                    patterns.update(_patterns({name: value}))
            patterns.update(_patterns({**self._environ, **from_file}))  # the current values win a shared form
            self._patterns = sorted(patterns.items(), key=lambda kv: -len(kv[0]))
            self._patterns_given = self._given_version
            self._longest = max((len(form.encode("utf-8", "surrogatepass")) for form, _ in self._patterns), default=0)
            self._patterns_of = from_file
        return self._patterns

    def redact(self, text: str) -> str:
        """`text` with every known secret value replaced by `[secret:NAME]` (longest first): the value as
        it is and as it appears JSON-escaped, percent-encoded or in a Python repr."""
        if not text:
            return text
        for form, placeholder in self._current():
            if form in text:
                text = text.replace(form, placeholder)
        return text

    def redact_from(self, text: str, start: int) -> tuple[str, int]:
        """`text` redacted, and where `text[start:]` begins in it: a secret that straddles `start` is
        replaced whole and counted after it (so the placeholder is shown, not part of the secret)."""
        if not text:
            return text, start
        for form, placeholder in self._current():
            if form not in text:
                continue
            parts: list[str] = []
            pos = 0
            shift = len(placeholder) - len(form)
            new_start = start
            while (found := text.find(form, pos)) >= 0:
                parts.append(text[pos:found])
                parts.append(placeholder)
                end = found + len(form)
                if end <= start:
                    new_start += shift
                elif found < start:  # straddles: the whole placeholder comes after the cut
                    new_start -= start - found
                pos = end
            parts.append(text[pos:])
            text, start = "".join(parts), new_start
        return text, start

    def longest(self) -> int:
        """The longest known value, in UTF-8 bytes, in any of the forms redact() finds."""
        self._current()
        return self._longest


_ESCAPES: tuple[Callable[[str], str], ...] = (
    lambda v: v,
    lambda v: json.dumps(v)[1:-1],  # echoed in JSON: a quote, a backslash, a control or non-ASCII character
    lambda v: json.dumps(v, ensure_ascii=False)[1:-1],
    lambda v: quote(v, safe=""),  # in a URL or a form
    lambda v: quote_plus(v, safe=""),
    lambda v: repr(v)[1:-1],  # in a Python repr (an exception's message, a printed dict)
)


def _patterns(values: Mapping[str, str]) -> list[tuple[str, str]]:
    found: dict[str, str] = {}
    for name, value in sorted(values.items(), key=lambda kv: -len(kv[1])):
        if len(value) < MIN_SECRET_LEN:
            continue
        placeholder = f"[{SECRET_PREFIX}{name}]"
        for escape in _ESCAPES:
            try:
                form = escape(value)
            except UnicodeError:  # a value with a lone surrogate (from the environment) has no percent form
                continue
            found.setdefault(form, placeholder)  # a longer value's name wins a form two values share
    return sorted(found.items(), key=lambda kv: -len(kv[0]))


NO_SECRETS = Secrets()


class Output:
    """A job's output, bounded: `write()` as it comes, `tail()` / `full()` redacted."""

    def __init__(self, secrets: Secrets = NO_SECRETS, keep: int = FULL_BYTES) -> None:
        self.secrets = secrets
        self.keep = keep
        self._buf = bytearray()
        self.dropped = 0  # bytes dropped from the front
        self.total = 0

    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        self.total += len(data)
        self._buf += data
        # keep a margin as long as the longest secret, so one cut in half is still found on reading
        limit = self.keep + self.secrets.longest() + 4
        if len(self._buf) > limit:
            cut = len(self._buf) - limit
            del self._buf[:cut]
            self.dropped += cut

    def _text(self, size: int) -> str:
        raw_buf = bytes(self._buf)
        if self.dropped:
            # the front of the buffer is a margin: it may hold the tail of a secret whose head was dropped,
            # which no match finds; it is redacted with the rest (for a secret that starts in it) and not shown
            margin = min(self.secrets.longest() + 4, len(raw_buf))
            while margin < len(raw_buf) and raw_buf[margin] & 0xC0 == 0x80:  # on a character boundary
                margin += 1
            front = raw_buf[:margin].decode("utf-8", "replace")
            text, start = self.secrets.redact_from(front + raw_buf[margin:].decode("utf-8", "replace"), len(front))
            text = text[start:]
        else:
            text = self.secrets.redact(raw_buf.decode("utf-8", "replace"))
        raw = text.encode("utf-8")
        if len(raw) <= size:
            return text
        return raw[-size:].decode("utf-8", "ignore")  # cut on a character boundary

    def tail(self, size: int = TAIL_BYTES) -> str:
        """The last `size` bytes, redacted (for the terminal event and StatusResp)."""
        return self._text(size)

    def full(self) -> str:
        """All that was kept, redacted, with a first line saying how much was dropped, if any."""
        text = self._text(self.keep)
        skipped = self.total - len(text.encode("utf-8"))
        if skipped > 0 and self.dropped:
            return f"[wf: the first {skipped:,} bytes of {self.total:,} were dropped]\n{text}"
        return text
