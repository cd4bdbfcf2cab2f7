"""The header fast paths of services/common/fastpath.py give nats-py's own results, byte for byte."""

import random

import nats.errors
import pytest
from nats.aio.client import Client

from services.common import fastpath  # noqa: F401  (applies the fast paths)

parse = Client._parse_header_lines
send_publish = Client._send_publish
pytestmark = pytest.mark.skipif(
    not (getattr(parse, "_wf_fast", False) and getattr(send_publish, "_wf_fast", False)),
    reason="this nats-py is not the version the header fast paths were written for: they stand aside",
)


def test_header_parsing_gives_the_originals_result_for_any_ascii_and_other_bytes() -> None:
    original = parse._wf_original
    rng = random.Random(7)
    alphabet = b"aZ09-_.:: \t\r\n\x0b\x0c\x1c\x1f\x00\x7f\xc3\xa9\xff"
    blocks = [
        b"Nats-Msg-Id: 01M8DB5229Y62T5RA4JS747Y1D.submitted\r\nNats-Expected-Last-Subject-Sequence: 0\r\n\r\n",
        b"A:b\r\nBad Key: v\r\n  Spaced  :  v  \r\n\x1cK: v\r\nK\x1f: v\r\n:empty\r\nnocolon\r\n",
        b"U: \xff\xfe\r\n\xc3\xa9: v\r\nK:\tv\r\nK: dup\r\n", b"", b"\r\n\r\n",
    ]
    blocks += [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(20000)]
    for block in blocks:
        assert parse(block) == original(block), block


class Captured(Client):
    """A client that keeps what it would send."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    async def _send_command(self, cmd: bytes, priority: bool = False) -> None:
        self.sent.append(bytes(cmd))


async def _sent(method, headers):  # type: ignore[no-untyped-def]
    client = Captured()
    try:
        await method(client, "wf.evt.x.submitted", "_INBOX.r.1", b"{}", 2, headers)
    except nats.errors.Error as exc:
        return type(exc)
    return client.sent


@pytest.mark.parametrize("headers", [
    None,
    {},
    {"Nats-Msg-Id": "01M8DB5229Y62T5RA4JS747Y1D.submitted", "Nats-Expected-Last-Subject-Sequence": "0"},
    {" Padded ": "  value  ", "": "skipped", "  ": "skipped too"},
    {"Crlf": "a\r\nPUB evil 0\r\n", "Lf": "x\ny"},
    {"Bad Name": "v"},
    {"Bad\r\nName": "v"},
    {"Ünicode": "v"},
    {"Value": "ünïcode ✓"},
])
async def test_publishing_with_headers_sends_the_originals_bytes_or_raises_its_error(headers) -> None:  # type: ignore[no-untyped-def]
    for _ in range(2):  # the second time, from the cache of checked names
        assert await _sent(send_publish, headers) == await _sent(send_publish._wf_original, headers)
