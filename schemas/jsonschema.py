"""JSON Schema for every wire type, generated from the msgspec types, for clients in other languages.

    python -m schemas.jsonschema           # rewrite schemas/json/
    python -m schemas.jsonschema --check   # exit 1 if schemas/json/ is stale

What msgspec writes is normalised first (descriptions dedented and joined, anyOf/oneOf sorted), so the
files change only when the wire types do, whatever msgspec release made them.
"""

from __future__ import annotations

import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Any

import msgspec

import schemas as s

OUT_DIR = Path(__file__).resolve().parent / "json"

TYPES: dict[str, Any] = {
    "WorkReq": s.WorkReq,
    "IdRequest": s.IdRequest,
    "ApprovalRequest": s.ApprovalRequest,
    "LogsRequest": s.LogsRequest,
    "LogsReply": s.LogsReply,
    "SubmitReply": s.SubmitReply,
    "IdReply": s.IdReply,
    "StatusResp": s.StatusResp,
    "StatusSummary": s.StatusSummary,
    "Event": s.Event,
    "JobCommand": s.JobCommand,
    **{cls.__name__: cls for cls in typing.get_args(s.Event)},
}

TITLES = {
    "WorkReq": "A WorkReq: the body of wf.api.submit",
    "IdRequest": "The body of wf.api.exec, wf.api.status, wf.api.cancel, wf.api.pause and wf.api.resume",
    "ApprovalRequest": "The body of wf.api.approve and wf.api.deny (deny: a non-empty comment)",
    "SubmitReply": "The success reply of wf.api.submit",
    "IdReply": "The success reply of wf.api.exec and wf.api.cancel",
    "StatusResp": "A workflow's status: the reply of wf.api.status and the value in KV wf_status",
    "StatusSummary": "A StatusResp too large for one message: jobs counted per block, not listed (jobs_omitted)",
    "Event": "Any event on wf.evt.<id>.<event> (stream WF_EVENTS), tagged by `type`",
    "JobCommand": "A job command on wf.cmd.job.<id>.<block>.<job> (stream WF_JOBS)",
}


# Values that are JSON data rather than schema: a "description" key inside them is not a description.
DATA_KEYWORDS = frozenset({"default", "const", "enum", "examples"})
# Lists of alternatives whose order means nothing (msgspec < 0.22 put `null` first in `X | None`).
UNORDERED = frozenset({"anyOf", "oneOf"})
# Maps from a name (any name, "default" included) to a schema.
NAMED_SCHEMAS = frozenset({"properties", "$defs", "patternProperties", "dependentSchemas"})


def normalize_text(text: str) -> str:
    """A description as written in a docstring, independent of how msgspec copied it: indentation
    removed (msgspec < 0.23 kept the docstring's, 0.23 strips it), lines within a paragraph joined
    with single spaces, paragraphs separated by one blank line."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in para.splitlines() if line.strip()) for para in paragraphs).strip()


def normalize(schema: Any) -> Any:
    """A JSON Schema as msgspec made it, with what differs between msgspec releases but means the
    same made canonical: every "description" normalised (normalize_text), the alternatives of
    anyOf/oneOf sorted. Everything else unchanged."""
    if isinstance(schema, list):
        return [normalize(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description" and isinstance(value, str):
            out[key] = normalize_text(value)
        elif key in DATA_KEYWORDS:
            out[key] = value
        elif key in UNORDERED and isinstance(value, list):
            out[key] = sorted((normalize(sub) for sub in value), key=lambda sub: json.dumps(sub, sort_keys=True))
        elif key in NAMED_SCHEMAS and isinstance(value, dict):
            out[key] = {name: normalize(sub) for name, sub in value.items()}  # a property may be named "description"
        else:
            out[key] = normalize(value)
    return out


def render(name: str, typ: Any) -> str:
    schema = normalize(msgspec.json.schema(typ))
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": TITLES.get(name, f"Event {name}"), **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def expected() -> dict[Path, str]:
    return {OUT_DIR / f"{name}.json": render(name, typ) for name, typ in TYPES.items()}


def main(argv: list[str]) -> int:
    files = expected()
    if "--check" in argv:
        stale = sorted(str(p) for p, text in files.items() if not p.is_file() or p.read_text() != text)
        extra = sorted(str(p) for p in OUT_DIR.glob("*.json") if p not in files)
        if stale or extra:
            print("schemas/json is stale; run: python -m schemas.jsonschema\n" + "\n".join(stale + extra), file=sys.stderr)
            return 1
        return 0
    OUT_DIR.mkdir(exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
