"""WebSocket framing (RFC 6455), sans-I/O: bytes in, messages out; messages in, bytes out.

This module never touches a socket. The reader feeds it whatever `recv` returned and gets back
whole messages; the hub asks it for frame bytes once per publish and hands the same bytes to every
subscriber. permessage-deflate is never negotiated, so a server frame is the same for everyone.
"""

from __future__ import annotations

import base64
import hashlib
import struct

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DATA_OPCODES = (OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
# Close codes a peer may send (RFC 6455 7.4): the defined ones and the 3000-4999 private range.
_VALID_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


class FrameError(Exception):
    """The peer broke the framing rules; the connection must close with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def accept_key(client_key: str) -> str:
    """The Sec-WebSocket-Accept value that answers a client's Sec-WebSocket-Key."""
    digest = hashlib.sha1(client_key.encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def encode_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One unmasked, unfragmented server frame."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, length))
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


def frame_payload(frame: bytes) -> bytes:
    """The payload of a frame made by `encode_frame` (used to reuse stored frames as JSON)."""
    length = frame[1]
    start = 2 if length < 126 else 4 if length == 126 else 10
    return frame[start:]


def encode_close(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit the 125-byte control-frame limit, on a character
    boundary (a peer must fail a close whose reason is not UTF-8)."""
    reason_bytes = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return encode_frame(struct.pack("!H", code) + reason_bytes, OP_CLOSE)


def parse_close(payload: bytes) -> tuple[int, str]:
    """The (code, reason) of a received close frame, validated as RFC 6455 asks."""
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    (code,) = struct.unpack("!H", payload[:2])
    if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
        raise FrameError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason


def _unmask(payload: bytes, mask: bytes) -> bytes:
    # XOR as one big integer: far faster in CPython than a per-byte loop.
    length = len(payload)
    if not length:
        return payload
    key = mask * (length // 4) + mask[: length % 4]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(length, "little")


class FrameParser:
    """Turns a stream of client bytes into whole messages.

    `feed(data)` returns a list of `(opcode, payload)`: text and binary messages reassembled from
    fragments, plus control frames as they come. It raises `FrameError` on anything RFC 6455 says
    must fail the connection, and on a message longer than `max_size` (close 1009) before
    buffering it.
    """

    __slots__ = ("_buffer", "_max_size", "_fragments", "_fragment_opcode", "_fragment_size")

    def __init__(self, max_size: int) -> None:
        self._buffer = b""
        self._max_size = max_size
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._fragment_size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer + data if self._buffer else data
        messages: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buffer)
        while end - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            length = second & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, pos + 2)
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, pos + 2)
                head = 10
            self._check_header(first, second, length)
            if end - pos < head + 4 + length:
                break
            mask = buffer[pos + head : pos + head + 4]
            start = pos + head + 4
            payload = _unmask(buffer[start : start + length], mask)
            pos = start + length
            message = self._assemble(first & 0x80, first & 0x0F, payload)
            if message is not None:
                messages.append(message)
        self._buffer = buffer[pos:]
        return messages

    def _check_header(self, first: int, second: int, length: int) -> None:
        opcode = first & 0x0F
        if first & 0x70:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set without an extension")
        if not second & 0x80:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        if opcode in _CONTROL_OPCODES:
            if length > 125 or not first & 0x80:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "control frames must be short and whole")
        elif opcode not in _DATA_OPCODES and opcode != OP_CONTINUATION:
            raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        elif self._fragment_size + length > self._max_size:
            raise FrameError(CLOSE_TOO_BIG, f"message larger than {self._max_size} bytes")

    def _assemble(self, fin: int, opcode: int, payload: bytes) -> tuple[int, bytes] | None:
        if opcode in _CONTROL_OPCODES:
            return opcode, payload
        if opcode == OP_CONTINUATION:
            if not self._fragment_opcode:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
            self._fragments.append(payload)
            self._fragment_size += len(payload)
            if not fin:
                return None
            whole = b"".join(self._fragments)
            opcode = self._fragment_opcode
            self._fragments = []
            self._fragment_opcode = 0
            self._fragment_size = 0
            return opcode, whole
        if self._fragment_opcode:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "new message before the last one ended")
        if fin:
            return opcode, payload
        self._fragment_opcode = opcode
        self._fragments = [payload]
        self._fragment_size = len(payload)
        return None
