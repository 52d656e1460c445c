"""Strict decoding of y-websocket messages and pre-encoding of outgoing WebSocket frames.

pycrdt's ``Decoder`` silently returns short slices of truncated input; a server facing the internet
must reject such frames instead, so decoding here checks every length.
"""

from __future__ import annotations

import struct
from enum import IntEnum

MESSAGE_SYNC = 0
MESSAGE_AWARENESS = 1
MESSAGE_AUTH = 2
MESSAGE_QUERY_AWARENESS = 3

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

# A Yjs update that changes nothing (no structs, empty delete set).
EMPTY_UPDATE = b"\x00\x00"

_MAX_VAR_UINT_BYTES = 8  # 56 bits: more than any length or client ID a real client sends


class ProtocolError(ValueError):
    """A message does not follow the y-websocket wire format; the message says where."""


class Opcode(IntEnum):
    """WebSocket frame opcodes we send pre-encoded."""

    TEXT = 0x1
    BINARY = 0x2


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a varUint at ``pos``; return (value, position after it)."""
    value = 0
    shift = 0
    for i in range(_MAX_VAR_UINT_BYTES):
        if pos + i >= len(data):
            raise ProtocolError(f"truncated varUint at byte {pos}")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + i + 1
        shift += 7
    raise ProtocolError(f"varUint longer than {_MAX_VAR_UINT_BYTES} bytes at byte {pos}")


def read_var_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    """Decode a length-prefixed byte array at ``pos``; return (bytes, position after it)."""
    length, pos = read_var_uint(data, pos)
    end = pos + length
    if end > len(data):
        raise ProtocolError(f"byte array of {length} bytes at byte {pos} runs past the end ({len(data)})")
    return data[pos:end], end


def awareness_entries(update: bytes) -> list[tuple[int, int, bool]]:
    """(client ID, clock, removed) of each entry of an encoded awareness update, in order.

    ``removed`` is True for a JSON ``null`` state. Raises ProtocolError on malformed input.
    """
    count, pos = read_var_uint(update, 0)
    # Each entry takes at least 3 bytes (ID, clock, empty state string): no lying counts.
    if count * 3 > len(update) - pos:
        raise ProtocolError(f"awareness update declares {count} entries in {len(update)} bytes")
    entries = []
    for _ in range(count):
        client_id, pos = read_var_uint(update, pos)
        clock, pos = read_var_uint(update, pos)
        state, pos = read_var_bytes(update, pos)
        entries.append((client_id, clock, state == b"null"))
    return entries


def write_var_uint(value: int) -> bytes:
    """Encode a non-negative int as a varUint."""
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def merge_awareness_updates(updates: list[bytes]) -> bytes:
    """One encoded awareness update holding every entry of ``updates``, in order.

    An awareness update is ``varUint(n)`` followed by n entries, so the merge is the summed count
    and the entries concatenated. A client listed twice stays twice: receivers apply entries in
    order and keep the highest clock (y-protocols ``applyAwarenessUpdate``), as if they had got
    the updates one by one. ``updates`` are server-encoded (well formed).
    """
    if len(updates) == 1:
        return updates[0]
    total = 0
    bodies = []
    for update in updates:
        count, pos = read_var_uint(update, 0)
        total += count
        bodies.append(update[pos:] if pos else update)
    return write_var_uint(total) + b"".join(bodies)


def sync_message(subtype: int, payload: bytes) -> bytes:
    """A y-websocket sync message (``0``, subtype, byte array)."""
    return bytes((MESSAGE_SYNC, subtype)) + write_var_uint(len(payload)) + payload


def awareness_message(update: bytes) -> bytes:
    """A y-websocket awareness message (``1``, byte array)."""
    return bytes((MESSAGE_AWARENESS,)) + write_var_uint(len(update)) + update


def auth_denied_message(reason: str) -> bytes:
    """A y-websocket auth message telling the client permission is denied (``2``, ``0``, reason)."""
    encoded = reason.encode()
    return bytes((MESSAGE_AUTH, 0)) + write_var_uint(len(encoded)) + encoded


def server_ws_frame(payload: bytes | str, opcode: Opcode | None = None) -> bytes:
    """One complete unmasked, uncompressed server-to-client WebSocket frame (RFC 6455 5.2).

    Encoded once per broadcast and written as-is to every recipient's transport.
    """
    if isinstance(payload, str):
        payload = payload.encode()
        opcode = opcode or Opcode.TEXT
    first = 0x82 if opcode is None else 0x80 | int(opcode)  # 0x82: FIN + binary, the common case
    length = len(payload)
    if length < 126:
        header = bytes((first, length))
    elif length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def check_declared_count(data: bytes, min_entry_bytes: int, what: str) -> None:
    """Reject ``data`` whose leading varUint count cannot fit in its length.

    The Yjs decoder (yrs, through pycrdt) reserves memory for the client count an update or a
    state vector declares before reading the entries: 5 bytes declaring 2^28 clients made it
    allocate ~512 MB. Each entry takes at least ``min_entry_bytes``, so a count beyond
    ``len(data) // min_entry_bytes`` is a lie; refuse it before pycrdt sees it.
    """
    count, pos = read_var_uint(data, 0)
    if count * min_entry_bytes > len(data) - pos:
        raise ProtocolError(f"{what} declares {count} entries in {len(data)} bytes")
