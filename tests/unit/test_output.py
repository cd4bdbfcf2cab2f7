"""A job's output is bounded and never shows a secret; secrets come from the runner, never the WorkReq."""

from __future__ import annotations

import json
import os

import pytest

from services.jobs.output import FULL_BYTES, TAIL_BYTES, Output, SecretError, Secrets, secret_name

TOKEN = "s3cr3t-t0ken-value"


def test_an_arg_names_a_secret_only_as_its_whole_value():
    assert secret_name("secret:TOKEN") == "TOKEN"
    assert secret_name("Bearer secret:TOKEN") is None  # a plain value: sent as it is, never resolved
    for bad in ("secret:", "secret:a b", "secret:../x", "secret:" + "x" * 65):
        with pytest.raises(SecretError):
            secret_name(bad)


def test_secrets_resolve_from_the_file_then_the_environment(tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"TOKEN": TOKEN}))
    secrets = Secrets.from_environ({"WF_SECRETS_FILE": str(path), "WF_SECRET_OTHER": "other-value", "TOKEN": "no"})
    assert secrets.resolve("secret:TOKEN") == TOKEN
    assert secrets.resolve("secret:OTHER") == "other-value"
    assert secrets.resolve("plain") == "plain"
    with pytest.raises(SecretError, match="'MISSING' is not set"):
        secrets.resolve("secret:MISSING")
    path.write_text(json.dumps({"TOKEN": "rotated-value"}))  # re-read when it changes
    os.utime(path, ns=(1, 1))
    assert secrets.resolve("secret:TOKEN") == "rotated-value"


def test_a_bad_secrets_file_is_an_error_that_names_it_and_redaction_goes_on(tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"TOKEN": TOKEN}))
    secrets = Secrets(path)
    assert secrets.redact(f"x {TOKEN} y") == "x [secret:TOKEN] y"
    path.write_text("not json")
    with pytest.raises(SecretError, match="secrets.json"):
        secrets.resolve("secret:TOKEN")
    assert secrets.redact(f"x {TOKEN} y") == "x [secret:TOKEN] y"  # the last good read still hides it


def test_a_too_short_secret_is_refused():
    with pytest.raises(SecretError, match="shorter"):
        Secrets(environ={"PIN": "12"}).resolve("secret:PIN")


def test_output_redacts_every_known_secret_in_tail_and_full():
    out = Output(Secrets(environ={"TOKEN": TOKEN, "OTHER": "another-secret"}))
    out.write(f"token={TOKEN}\n".encode())
    out.write("and another-secret here\n")
    assert TOKEN not in out.tail() and "[secret:TOKEN]" in out.tail()
    assert "another-secret" not in out.full() and "[secret:OTHER]" in out.full()


def test_output_is_bounded_and_a_secret_cut_in_half_by_the_bound_is_still_hidden():
    out = Output(Secrets(environ={"TOKEN": TOKEN}))
    out.write(b"a" * (FULL_BYTES + 10_000))
    out.write(TOKEN[:6].encode())  # a secret arriving in two writes
    out.write(TOKEN[6:].encode() + b"\n" + b"b" * (FULL_BYTES - 8))  # ... and then pushed to the very front
    full = out.full()
    assert len(full.encode()) <= FULL_BYTES + 200
    assert full.startswith("[wf: the first")
    assert TOKEN[:6] not in full and TOKEN[6:] not in full
    assert len(out.tail().encode()) <= TAIL_BYTES and out.tail().endswith("b")


def test_output_cuts_on_a_character_boundary():
    out = Output()
    out.write(("é" * 5000).encode())
    tail = out.tail()
    assert len(tail.encode()) <= TAIL_BYTES and set(tail) == {"é"}


def test_the_runners_log_processor_redacts_every_string_of_an_event():
    from services.common.logs import redacting

    process = redacting(Secrets(environ={"TOKEN": TOKEN}).redact)
    event = process(None, "info", {"event": "job_crashed", "error": f"ValueError('{TOKEN}')", "attempt": 2,
                                   "exception": f"Traceback ...\nValueError: {TOKEN}"})
    assert TOKEN not in json.dumps(event) and event["attempt"] == 2 and "[secret:TOKEN]" in event["error"]


def test_a_secret_is_redacted_in_its_escaped_forms():
    from urllib.parse import quote, quote_plus

    secret = 'p a"s\\s\'é\n-42'
    secrets = Secrets(environ={"Q": secret})
    for form in (secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
                 quote(secret, safe=""), quote_plus(secret), repr(secret)[1:-1]):
        assert secrets.redact(f"<{form}>") == "<[secret:Q]>", form
    assert secrets.longest() == len(quote(secret, safe=""))  # the margin covers the longest form


def test_escaped_forms_follow_the_secrets_file(tmp_path, monkeypatch):
    import services.jobs.output

    monkeypatch.setattr(services.jobs.output, "LOOK_EVERY_S", 0.0)  # (redaction looks once a second)
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"Q": 'old"value'}))
    secrets = Secrets(path)
    assert secrets.redact('old\\"value') == "[secret:Q]"
    path.write_text(json.dumps({"Q": 'new"value-2'}))
    os.utime(path, ns=(1, 1))
    assert secrets.redact('new\\"value-2 old\\"value') == '[secret:Q] old\\"value'


def test_the_margin_kept_before_the_output_is_never_shown():
    secret = "S" * 30 + "T" * 30
    out = Output(Secrets(environ={"T": secret}), keep=1000)
    out.write("x" * 40 + secret + "y" * 2000)  # the secret is dropped but for its last 30 bytes ...
    margin = out.secrets.longest() + 4
    out._buf[:] = (secret[30:] + "z" * (margin - 30)).encode() + b"w" * 1000  # ... kept in the margin
    assert out.dropped and "T" not in out.full() and "z" not in out.full()
    assert out.full().endswith("w" * 1000) and "T" not in out.tail()


def test_a_secret_starting_in_the_margin_is_redacted_whole():
    text, start = Secrets(environ={"TOKEN": TOKEN}).redact_from("b" * 10 + TOKEN + "c" * 10, 12)
    assert text[start:] == "[secret:TOKEN]" + "c" * 10  # the token straddles the cut: shown as its name
    out = Output(Secrets(environ={"TOKEN": TOKEN}), keep=100)
    out.write(b"a" * 500)
    out.write(b"b" * 10 + TOKEN.encode() + b"c" * 100)  # the token starts 10 bytes into the margin
    full = out.full()
    assert full.startswith("[wf: the first") and full.endswith("c" * 100)
    assert not any(TOKEN[i:i + 4] in full for i in range(len(TOKEN) - 3))


def test_a_value_given_to_a_job_stays_redacted_after_it_is_rotated_out(tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"TOKEN": TOKEN}))
    secrets = Secrets(path)
    assert secrets.resolve("secret:TOKEN") == TOKEN  # a job got the old value ...
    path.write_text(json.dumps({"TOKEN": "the-new-value"}))
    os.utime(path, ns=(2, 2))
    assert secrets.resolve("secret:TOKEN") == "the-new-value"
    out = Output(secrets)
    out.write(f"old {TOKEN} new the-new-value\n")  # ... and printed it after the rotation
    assert out.tail() == "old [secret:TOKEN] new [secret:TOKEN]\n"
