"""The framing codec with plain bytes: no sockets."""

from __future__ import annotations

import os

import pytest

from switchboard_server.transport.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameError,
    FrameParser,
    accept_key,
    encode_close,
    encode_frame,
    frame_payload,
    parse_close,
)


def client_frame(payload: bytes, opcode: int = OP_TEXT, fin: bool = True, mask: bytes = b"\x0a\x0b\x0c\x0d") -> bytes:
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 65536:
        header = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_accept_key_matches_rfc_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_every_length_encoding_round_trips(size):
    payload = os.urandom(size)
    parser = FrameParser(max_size=1 << 20)
    assert parser.feed(client_frame(payload, OP_BINARY)) == [(OP_BINARY, payload)]
    assert frame_payload(encode_frame(payload)) == payload


def test_bytes_arriving_one_at_a_time():
    stream = client_frame(b"hello") + client_frame(b"x" * 300)
    parser = FrameParser(max_size=1024)
    messages = []
    for i in range(len(stream)):
        messages += parser.feed(stream[i : i + 1])
    assert messages == [(OP_TEXT, b"hello"), (OP_TEXT, b"x" * 300)]


def test_fragments_with_a_ping_between():
    parser = FrameParser(max_size=1024)
    data = client_frame(b"ab", OP_TEXT, fin=False) + client_frame(b"", OP_PING) + client_frame(b"cd", 0, fin=True)
    assert parser.feed(data) == [(OP_PING, b""), (OP_TEXT, b"abcd")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x81\x02hi", 1002),  # unmasked
        (b"\xc1\x80\x00\x00\x00\x00", 1002),  # RSV1 without an extension
        (b"\x83\x80\x00\x00\x00\x00", 1002),  # reserved opcode
        (b"\x09\x80\x00\x00\x00\x00", 1002),  # fragmented ping
        (b"\x80\x80\x00\x00\x00\x00", 1002),  # continuation of nothing
        (b"\x81\xff" + (1 << 40).to_bytes(8, "big"), 1009),  # declared too big: refused from the header
    ],
)
def test_protocol_violations(data, code):
    with pytest.raises(FrameError) as error:
        FrameParser(max_size=1024).feed(data)
    assert error.value.code == code


def test_fragments_count_towards_the_size_limit():
    parser = FrameParser(max_size=10)
    parser.feed(client_frame(b"123456", OP_TEXT, fin=False))
    with pytest.raises(FrameError) as error:
        parser.feed(client_frame(b"789012", 0, fin=True))
    assert error.value.code == 1009


def test_close_frames():
    assert frame_payload(encode_close(1001, "bye")) == b"\x03\xe9bye"
    assert encode_close(1000, "x" * 500)[1] == 125  # reason cut to fit a control frame
    cut = frame_payload(encode_close(4409, "é" * 100))  # cut on a character boundary, not inside one
    assert len(cut) <= 125 and cut[2:].decode("utf-8") == "é" * 61
    assert parse_close(b"") == (1005, "")
    assert parse_close(b"\x03\xe8ok") == (1000, "ok")
    for bad in (b"\x03", b"\x03\xed", b"\x03\xe8\xff"):
        with pytest.raises(FrameError):
            parse_close(bad)
    assert FrameParser(125).feed(client_frame(b"\x03\xe8", OP_CLOSE)) == [(OP_CLOSE, b"\x03\xe8")]
