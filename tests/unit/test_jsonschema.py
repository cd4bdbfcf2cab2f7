import json

import msgspec

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


class Indented(msgspec.Struct):
    """A docstring as written in a class body: its second line
    is indented, and msgspec < 0.23 kept that indentation.

        A second paragraph, indented further.
    """

    x: int


class Flat(msgspec.Struct):
    x: int


Flat.__doc__ = ("A docstring as written in a class body: its second line\nis indented, and msgspec < 0.23 kept that "
                "indentation.\n\nA second paragraph, indented further.")


def _without_title(text: str) -> dict:  # type: ignore[type-arg]
    schema = json.loads(text)
    definitions = schema.pop("$defs")
    assert set(definitions) == {schema.pop("$ref").rsplit("/", 1)[1]}
    (body,) = definitions.values()
    body.pop("title")
    return body


def test_a_docstring_with_or_without_indentation_gives_the_same_schema():
    indented = _without_title(jsonschema.render("X", Indented))
    assert indented == _without_title(jsonschema.render("X", Flat))
    assert indented["description"] == ("A docstring as written in a class body: its second line is indented, and "
                                        "msgspec < 0.23 kept that indentation.\n\nA second paragraph, indented further.")


def test_descriptions_as_old_and_new_msgspec_copy_them_normalise_alike():
    # msgspec 0.19-0.22 copied the docstring's indentation and put null first in `X | None`; 0.23 does neither
    old = {"$defs": {"S": {"description": "First line,\n    second line.", "properties": {
        "description": {"type": "string", "default": "kept\n    as data"},
        "other": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/T"}], "description": "  one\n  two  "}}}}}
    new = {"$defs": {"S": {"description": "First line,\nsecond line.", "properties": {
        "description": {"type": "string", "default": "kept\n    as data"},
        "other": {"anyOf": [{"$ref": "#/$defs/T"}, {"type": "null"}], "description": "one\ntwo"}}}}}
    assert jsonschema.normalize(old) == jsonschema.normalize(new)
    normal = jsonschema.normalize(new)["$defs"]["S"]
    assert normal["description"] == "First line, second line."
    assert normal["properties"]["description"]["default"] == "kept\n    as data"  # data, not a description
    assert normal["properties"]["other"]["description"] == "one two"


def test_the_schemas_change_when_a_wire_type_does():
    class Changed(msgspec.Struct):
        x: int
        y: str

    assert jsonschema.render("X", Changed) != jsonschema.render("X", Flat)
