"""An encoder for AWS event-stream frames (``application/vnd.amazon.eventstream``).

botocore only decodes the format (``botocore/eventstream.py``); fakes need to produce it.
A frame is::

    total_length u32 | headers_length u32 | prelude_crc u32 | headers | payload | message_crc u32

big-endian, where ``prelude_crc`` is the CRC32 of the first 8 bytes and ``message_crc`` the
CRC32 of everything before it. Each header is ``name_length u8 | name | type u8 | value``;
strings are type 7 with a ``u16`` length, byte arrays type 6, booleans types 0/1 (no value),
32-bit integers type 4.
"""

from __future__ import annotations

import struct
from binascii import crc32
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["corrupt", "encode_frame", "event_frame", "exception_frame"]

HeaderValue = str | bytes | bool | int


def _header(name: str, value: HeaderValue) -> bytes:
    raw_name = name.encode()
    head = struct.pack("!B", len(raw_name)) + raw_name
    if isinstance(value, bool):  # before int: bool is an int subclass
        return head + struct.pack("!B", 0 if value else 1)
    if isinstance(value, int):
        return head + struct.pack("!Bi", 4, value)
    data = value.encode() if isinstance(value, str) else value
    return head + struct.pack("!BH", 7 if isinstance(value, str) else 6, len(data)) + data


def encode_frame(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    """One frame with both CRCs, as a real event stream carries it."""
    raw_headers = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    body = prelude + struct.pack("!I", crc32(prelude) & 0xFFFFFFFF) + raw_headers + payload
    return body + struct.pack("!I", crc32(body) & 0xFFFFFFFF)


def event_frame(event_type: str, payload: Any) -> bytes:
    """An ``event`` message (``:event-type`` names the union member) with a JSON payload."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_frame(headers, orjson.dumps(payload))


def exception_frame(exception_type: str, payload: Any) -> bytes:
    """An in-band ``exception`` message (``:exception-type``, e.g. ``throttlingException``)."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_frame(headers, orjson.dumps(payload))


def corrupt(frame: bytes) -> bytes:
    """The same frame with a wrong message CRC: a decoder must reject it."""
    return frame[:-1] + bytes([frame[-1] ^ 0xFF])
