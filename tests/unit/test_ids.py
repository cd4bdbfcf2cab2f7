"""Workflow ids: ULIDs in Crockford base32, increasing, and what their characters mean."""

import random
import time

from services.common.ids import _ALPHABET, encode, id_time_s, is_valid_id, new_id


def by_definition(value: int) -> str:
    """A ULID's characters as the spec defines them: 5 bits each from the top, the first holding 3."""
    return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))


def test_encoding_matches_the_definition_at_the_edges_and_at_random() -> None:
    rng = random.Random(11)
    for value in [0, 1, 31, 32, (1 << 128) - 1, 1 << 127, 1 << 125, (1 << 125) - 1] + [rng.getrandbits(128) for _ in range(20000)]:
        assert encode(value) == by_definition(value)


def test_ids_made_in_one_millisecond_still_increase_and_carry_their_time() -> None:
    now_ms = int(time.time() * 1000) + 5_000  # ahead of any id this process made before
    ids = [new_id(now_ms=now_ms) for _ in range(1000)]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert all(is_valid_id(i) for i in ids)
    assert {id_time_s(i) for i in ids} == {now_ms / 1000}
