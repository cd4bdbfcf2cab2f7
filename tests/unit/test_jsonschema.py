import json

from schemas import jsonschema


def test_the_json_schemas_match_the_wire_types():
    """Fails when a wire type changed and `python -m schemas.jsonschema` was not run."""
    assert jsonschema.main(["--check"]) == 0


def test_the_workreq_schema_says_what_the_decoder_enforces():
    schema = json.loads((jsonschema.OUT_DIR / "WorkReq.json").read_text())
    workreq = schema["$defs"]["WorkReq"]
    assert set(workreq["required"]) == {"name", "blocks"}
    assert workreq["additionalProperties"] is False
    assert workreq["properties"]["blocks"]["minItems"] == 1
    assert workreq["properties"]["name"]["pattern"] == "^[A-Za-z0-9_-]+$"
    event = json.loads((jsonschema.OUT_DIR / "Event.json").read_text())
    tags = {d["properties"]["type"]["enum"][0] for d in event["$defs"].values() if "type" in d.get("properties", {})}
    assert {"submitted", "job.failed", "workflow.ended", "cancel_requested"} <= tags
