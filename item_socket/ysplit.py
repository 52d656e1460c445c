"""Cut a large Yjs update into several smaller valid updates (the v1 encoding yrs and Yjs write).

Why: a document's first sync used to go out as one message. On a slow link a multi-megabyte
message outlasts the clients' watchdogs (y-websocket closes a socket that received no message for
30 s; Engine.IO expects a ping every 45 s) and the sync starts over, forever. Yjs updates apply in
any order (structs whose dependencies are missing wait in the client's pending store), so the
state can go out as several updates, each small enough to arrive well within those deadlines.

The v1 format, as read by Yjs ``readClientsStructRefs``/``readItemContent`` and yrs ``Update::decode``:

    update    = varUint(#clients) clientRun* deleteSet
    clientRun = varUint(#structs) varUint(client) varUint(firstClock) struct*
    struct    = GC (info 0) or Skip (info 10): varUint(length)
              | Item: info byte (bits 0-4 content ref, 0x80 origin, 0x40 right origin, 0x20 parentSub)
                      [origin ID] [right origin ID]
                      [if neither origin: varUint(1) varString(root key) | varUint(0) parent ID,
                       then varString(parentSub) if 0x20]
                      content
    ID        = varUint(client) varUint(clock)
    deleteSet = varUint(#clients) (varUint(client) varUint(#ranges) (varUint(clock) varUint(length))*)*

An Item longer than the budget (a large string, JSON or Any list) is cut the way Yjs splits items:
the first part keeps the original header; every later part starting at offset k has origin
(client, clock + k - 1) and the original right origin, and no parent (implied by the origin).
A client appears in at most one run per update (the Yjs reader keeps one run per client).
"""

from __future__ import annotations

from .yprotocol import write_var_uint

# Content refs (Yjs ``contentRefs`` / yrs ``BLOCK_*_REF_NUMBER``).
_GC = 0
_DELETED = 1
_JSON = 2
_BINARY = 3
_STRING = 4
_EMBED = 5
_FORMAT = 6
_TYPE = 7
_ANY = 8
_DOC = 9
_SKIP = 10
# Type refs whose content carries a node name (YXmlElement, YXmlHook).
_NAMED_TYPE_REFS = (3, 5)
_MAX_TYPE_REF = 6
_EMPTY_DELETE_SET = b"\x00"


class SplitError(ValueError):
    """The bytes are not a v1 update this module can read (the caller sends the update whole)."""


class _Reader:
    """A cursor over update bytes; IndexError when reading past the end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uint(self) -> int:
        data = self.data
        pos = self.pos
        byte = data[pos]
        pos += 1
        if byte < 0x80:
            self.pos = pos
            return byte
        value = byte & 0x7F
        shift = 7
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return value
            shift += 7
            if shift > 63:
                raise SplitError(f"varUint longer than 9 bytes at byte {self.pos}")

    def skip_bytes(self) -> None:
        """Skip a varUint-length-prefixed byte array (or string)."""
        length = self.uint()
        end = self.pos + length
        if end > len(self.data):
            raise SplitError(f"byte array of {length} bytes at {self.pos} runs past the end")
        self.pos = end

    def skip_any(self) -> None:
        """Skip one lib0 ``any`` value (lib0/encoding.js ``writeAny``)."""
        kind = self.data[self.pos]
        self.pos += 1
        if kind in (127, 126, 121, 120):  # undefined, null, false, true
            return
        if kind == 125:  # varInt: until a byte without the continuation bit
            while self.data[self.pos] >= 0x80:
                self.pos += 1
            self.pos += 1
        elif kind == 124:  # float32
            self.pos += 4
        elif kind in (123, 122):  # float64, bigint64
            self.pos += 8
        elif kind in (119, 116):  # string, Uint8Array
            self.skip_bytes()
        elif kind == 118:  # object: key, value pairs
            for _ in range(self.uint()):
                self.skip_bytes()
                self.skip_any()
        elif kind == 117:  # array
            for _ in range(self.uint()):
                self.skip_any()
        else:
            raise SplitError(f"unknown lib0 any type {kind} at byte {self.pos - 1}")


def _utf16_length(raw: bytes) -> int:
    """Length in UTF-16 code units (Yjs counts string lengths and clocks in them)."""
    if raw.isascii():
        return len(raw)
    return len(raw.decode("utf-8").encode("utf-16-le")) // 2


def _skip_parent(reader: _Reader, info: int) -> None:
    """Skip an Item's parent (a root type name or a type ID) and parentSub, which Yjs writes only
    when the Item has neither origin (the 0xC0 bits of ``info``)."""
    if not info & 0xC0:
        if reader.uint() == 1:
            reader.skip_bytes()
        else:
            reader.uint()
            reader.uint()
        if info & 0x20:
            reader.skip_bytes()


def _read_struct(reader: _Reader) -> int:
    """Skip one struct at the reader's position; return its length in clock units."""
    info = reader.data[reader.pos]
    reader.pos += 1
    ref = info & 0x1F
    if ref in (_GC, _SKIP):
        return reader.uint()
    if info & 0x80:
        reader.uint()
        reader.uint()
    if info & 0x40:
        reader.uint()
        reader.uint()
    _skip_parent(reader, info)
    if ref == _DELETED:
        return reader.uint()
    if ref == _STRING:
        length = reader.uint()
        start = reader.pos
        reader.pos += length
        if reader.pos > len(reader.data):
            raise SplitError(f"string of {length} bytes at {start} runs past the end")
        return _utf16_length(reader.data[start : reader.pos])
    if ref == _JSON:
        count = reader.uint()
        for _ in range(count):
            reader.skip_bytes()
        return count
    if ref == _ANY:
        count = reader.uint()
        for _ in range(count):
            reader.skip_any()
        return count
    if ref in (_BINARY, _EMBED):
        reader.skip_bytes()
    elif ref == _FORMAT:
        reader.skip_bytes()
        reader.skip_bytes()
    elif ref == _TYPE:
        type_ref = reader.uint()
        if type_ref > _MAX_TYPE_REF:
            raise SplitError(f"unknown type ref {type_ref}")
        if type_ref in _NAMED_TYPE_REFS:
            reader.skip_bytes()
    elif ref == _DOC:
        reader.skip_bytes()
        reader.skip_any()
    else:
        raise SplitError(f"unknown content ref {ref}")
    return 1


def _cut_item(
    data: bytes, start: int, end: int, client: int, clock: int, budget: int
) -> list[tuple[int, bytes]]:
    """Cut the Item at ``data[start:end]`` into parts of about ``budget`` bytes: [(clock, bytes)].

    Only string, JSON and Any contents can be cut; any other Item is returned whole.
    """
    reader = _Reader(data)
    reader.pos = start
    info = data[start]
    reader.pos += 1
    if info & 0x80:
        reader.uint()
        reader.uint()
    right_start = reader.pos
    if info & 0x40:
        reader.uint()
        reader.uint()
    right_origin = data[right_start : reader.pos]
    _skip_parent(reader, info)
    header = data[start : reader.pos]
    ref = info & 0x1F
    # Each part: (content bytes, length in clock units).
    parts: list[tuple[bytes, int]] = []
    if ref == _STRING:
        length = reader.uint()
        raw = data[reader.pos : reader.pos + length]
        offset = 0
        while offset < length:
            cut = min(offset + budget, length)
            while cut > offset and cut < length and raw[cut] & 0xC0 == 0x80:  # never inside a UTF-8 sequence
                cut -= 1
            if cut == offset:  # a budget smaller than one character: take that character whole
                cut += 1
                while cut < length and raw[cut] & 0xC0 == 0x80:
                    cut += 1
            piece = raw[offset:cut]
            parts.append((write_var_uint(len(piece)) + piece, _utf16_length(piece)))
            offset = cut
    elif ref in (_JSON, _ANY):
        count = reader.uint()
        group_start = reader.pos
        group = 0
        for _ in range(count):
            if ref == _JSON:
                reader.skip_bytes()
            else:
                reader.skip_any()
            group += 1
            if reader.pos - group_start >= budget:
                parts.append((write_var_uint(group) + data[group_start : reader.pos], group))
                group_start, group = reader.pos, 0
        if group:
            parts.append((write_var_uint(group) + data[group_start : reader.pos], group))
    else:
        return [(clock, data[start:end])]
    pieces: list[tuple[int, bytes]] = []
    offset = 0
    for content, length in parts:
        if offset == 0:
            pieces.append((clock, header + content))
        else:
            later_header = (
                bytes((info | 0x80,))
                + write_var_uint(client)
                + write_var_uint(clock + offset - 1)
                + (right_origin if info & 0x40 else b"")
            )
            pieces.append((clock + offset, later_header + content))
        offset += length
    return pieces


def split_update(update: bytes, max_bytes: int) -> list[bytes]:
    """Split a v1 ``update`` into valid updates of at most about ``max_bytes`` bytes each.

    Applied in any order, the parts give the state ``update`` gives (sent in order, each part's
    dependencies mostly arrive first). Parts exceed ``max_bytes`` only where one struct cannot be
    cut (e.g. a large binary). Returns ``[update]`` when it is not larger than ``max_bytes``.
    Raises SplitError when the bytes cannot be read. Pure function over bytes (thread-safe).
    """
    if len(update) <= max_bytes:
        return [update]
    try:
        return _split(update, max_bytes)
    except (IndexError, UnicodeDecodeError, RecursionError) as exc:
        raise SplitError(f"unreadable update ({len(update)} bytes): {exc!r}") from exc


def _split(data: bytes, budget: int) -> list[bytes]:
    reader = _Reader(data)
    chunks: list[bytes] = []
    runs: list[tuple[int, int, list[bytes]]] = []  # (client, first clock, struct bytes) of the chunk
    size = 0

    def flush(delete_set: bytes = _EMPTY_DELETE_SET) -> None:
        nonlocal size
        encoded = [write_var_uint(len(runs))]
        for client, first_clock, structs in runs:
            encoded += [
                write_var_uint(len(structs)),
                write_var_uint(client),
                write_var_uint(first_clock),
                *structs,
            ]
        encoded.append(delete_set)
        chunks.append(b"".join(encoded))
        runs.clear()
        size = 0

    for _ in range(reader.uint()):
        count = reader.uint()
        client = reader.uint()
        clock = reader.uint()
        run: list[bytes] | None = None
        for _ in range(count):
            start = reader.pos
            length = _read_struct(reader)
            end = reader.pos
            pieces = (
                [(clock, data[start:end])]
                if end - start <= budget
                else _cut_item(data, start, end, client, clock, budget)
            )
            for piece_clock, piece in pieces:
                if runs and size + len(piece) > budget:
                    flush()
                    run = None
                if run is None:
                    run = []
                    runs.append((client, piece_clock, run))
                run.append(piece)
                size += len(piece) + 3  # + the run header, roughly
            clock += length
    delete_set_start = reader.pos
    delete_set_parts = _split_delete_set(reader, budget)
    if reader.pos != len(data):
        raise SplitError(f"{len(data) - reader.pos} bytes after the delete set")
    if len(delete_set_parts) == 1 and size + reader.pos - delete_set_start <= budget:
        flush(delete_set_parts[0])
    else:
        if runs:
            flush()
        for part in delete_set_parts:
            chunks.append(b"\x00" + part)
    return chunks


def _split_delete_set(reader: _Reader, budget: int) -> list[bytes]:
    """Read the delete set; return it as one or more delete sets of about ``budget`` bytes."""
    parts: list[bytes] = []
    entries: list[bytes] = []  # per client: varUint(client) varUint(#ranges) ranges
    size = 0
    for _ in range(reader.uint()):
        client = reader.uint()
        count = reader.uint()
        ranges_start = reader.pos
        taken = 0
        for index in range(count):
            reader.uint()
            reader.uint()
            taken += 1
            if reader.pos - ranges_start >= budget and index + 1 < count:
                entries.append(
                    write_var_uint(client) + write_var_uint(taken) + reader.data[ranges_start : reader.pos]
                )
                parts.append(write_var_uint(len(entries)) + b"".join(entries))
                entries, size, taken, ranges_start = [], 0, 0, reader.pos
        entry = write_var_uint(client) + write_var_uint(taken) + reader.data[ranges_start : reader.pos]
        if entries and size + len(entry) > budget:
            parts.append(write_var_uint(len(entries)) + b"".join(entries))
            entries, size = [], 0
        entries.append(entry)
        size += len(entry)
    parts.append(write_var_uint(len(entries)) + b"".join(entries))
    return parts
