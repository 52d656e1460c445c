"""Hypothesis-driven hostile input against a live item_socket, on both protocols.

After every input the server must still serve a well-behaved client the intact target document;
periodically (and at the end) two real npm clients must still exchange edits through it. The number
of inputs per test is ITEM_SOCKET_FUZZ_EXAMPLES (default keeps the suite under a minute);
benchmarks/item_socket/fuzz_long.sh runs the same tests with many more.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .conftest import EXPECTED_TEXT, FUZZ_SERVER_ARGS, MAX_MESSAGE_BYTES, TARGET_DOC, FuzzTarget, harness
from .rawclients import (
    Outcome,
    read_document,
    run,
    send_polling_bodies,
    send_socketio_frames,
    send_ywebsocket_frames,
    var_bytes,
    var_uint,
)

EXAMPLES = int(os.environ.get("ITEM_SOCKET_FUZZ_EXAMPLES", "120"))
GUARDIAN_CHECK_EVERY = 25

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# --- y-websocket frames -------------------------------------------------------------------------

json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


def _awareness_entry(client_id: int, clock: int, state: str) -> bytes:
    return var_uint(client_id) + var_uint(clock) + var_bytes(state.encode("utf-8", "surrogatepass"))


awareness_payload = st.one_of(
    st.binary(max_size=120),
    # Structurally valid entries with hostile JSON (non-JSON, non-objects, huge ids and clocks).
    st.lists(
        st.tuples(
            st.integers(0, 2**53),
            st.integers(0, 2**40),
            st.one_of(st.text(max_size=40), json_value.map(json.dumps)),
        ),
        max_size=4,
    ).map(lambda entries: var_uint(len(entries)) + b"".join(_awareness_entry(*e) for e in entries)),
    # An entry count that promises more entries than follow.
    st.integers(1, 2**32).map(lambda n: var_uint(n) + b"\x01\x01\x02{}"),
)


def _scratch_update(seed: int) -> bytes:
    """A real Yjs update touching only the roots 'scratch' and 'scratch-text' (never 'text')."""
    from pycrdt import Doc, Map, Text

    doc = Doc(client_id=1000 + seed)  # deterministic bytes, as hypothesis requires
    doc["scratch"] = scratch = Map()
    doc["scratch-text"] = text = Text()
    for step in range(1 + seed % 5):
        scratch[f"k{step}"] = seed * step
        text += f"{seed}:{step};"
    if seed % 3 == 0:
        del text[0:2]
    return doc.get_update()


@st.composite
def mutated_update(draw: st.DrawFn) -> bytes:
    """A real update with 1-4 byte flips, a truncation or an extension: reaches deep into yrs' decoder."""
    update = bytearray(_scratch_update(draw(st.integers(0, 50))))
    how = draw(st.sampled_from(["flip", "truncate", "extend"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            index = draw(st.integers(0, len(update) - 1))
            update[index] = draw(st.integers(0, 255))
    elif how == "truncate":
        del update[draw(st.integers(1, len(update) - 1)) :]
    else:
        update += draw(st.binary(min_size=1, max_size=20))
    return bytes(update)


WS_FRAME_KINDS: dict[str, st.SearchStrategy[bytes | str]] = {
    "random bytes": st.binary(max_size=200),
    "truncated varUint": st.integers(1, 12).map(lambda n: b"\x80" * n),
    "truncated varUint in body": st.tuples(st.sampled_from([0, 1]), st.integers(1, 12)).map(
        lambda t: bytes((t[0],)) + b"\xff" * t[1]
    ),
    "sync envelope, garbage payload": st.tuples(st.sampled_from([0, 1, 2]), st.binary(max_size=200)).map(
        lambda t: bytes((0, t[0])) + var_bytes(t[1])
    ),
    "sync envelope, mutated real update": st.tuples(st.sampled_from([1, 2]), mutated_update()).map(
        lambda t: bytes((0, t[0])) + var_bytes(t[1])
    ),
    "sync envelope, lying length": st.tuples(
        st.sampled_from([0, 1, 2]), st.integers(1, 2**40), st.binary(max_size=40)
    ).map(lambda t: bytes((0, t[0])) + var_uint(t[1]) + t[2]),
    "unknown sync subtype": st.tuples(st.integers(3, 2**20), st.binary(max_size=40)).map(
        lambda t: b"\x00" + var_uint(t[0]) + var_bytes(t[1])
    ),
    "awareness, hostile payload": awareness_payload.map(lambda p: b"\x01" + var_bytes(p)),
    "auth message from a client": st.binary(max_size=60).map(lambda b: b"\x02" + b),
    "query awareness plus junk": st.binary(max_size=10).map(lambda b: b"\x03" + b),
    "unknown message type": st.tuples(st.integers(4, 2**30), st.binary(max_size=40)).map(
        lambda t: var_uint(t[0]) + t[1]
    ),
    "empty update then junk": st.binary(min_size=1, max_size=60).map(
        lambda b: b"\x00\x02" + var_bytes(b"\x00\x00") + b
    ),
    "empty frame": st.just(b""),
    "text frame": st.text(max_size=120),
}
# sampled_from spreads inputs evenly over the kinds (one_of would favour the first branches).
ws_frame = st.sampled_from(sorted(WS_FRAME_KINDS)).flatmap(
    lambda kind: WS_FRAME_KINDS[kind].map(lambda frame: (kind, frame))
)
ws_frames = st.lists(ws_frame, min_size=1, max_size=5)


def _after_input(target: FuzzTarget, outcome: Outcome | None, kinds: list[str]) -> None:
    for kind in kinds:
        target.inputs[kind] += 1
    if outcome is not None:
        target.outcomes["closed by server" if outcome.closed_by_server else "left open"] += 1
    assert target.server.alive(), f"server died after {kinds}:\n{target.server.stderr_text()}"
    text = run(read_document(target.server.ws_url, TARGET_DOC))
    assert text == EXPECTED_TEXT, f"target document changed after {kinds}: {text!r}"
    # The real npm clients get every relayed update: a poisoned one kills their process at once.
    guardian_agent = target.guardians[0].agent
    assert guardian_agent.proc.poll() is None, (
        f"the npm guardian clients crashed after {kinds}:\n{guardian_agent.stderr_text()[-2000:]}"
    )
    if sum(target.inputs.values()) // GUARDIAN_CHECK_EVERY > target.checks:
        target.check_guardians()


@pytest.mark.slow
@FUZZ_SETTINGS
@given(frames=ws_frames)
def test_fuzz_ywebsocket_frames(fuzz_target: FuzzTarget, frames: list[tuple[str, bytes | str]]) -> None:
    outcome = run(send_ywebsocket_frames(fuzz_target.server.ws_url, TARGET_DOC, [f for _k, f in frames]))
    _after_input(fuzz_target, outcome, [f"ws: {k}" for k, _f in frames])


# --- Socket.IO packets --------------------------------------------------------------------------

NAMESPACE = f"/yjs|{TARGET_DOC}"
EVENTS = ["sync-update", "sync-step-1", "awareness-update", "sync-step-2", "message", "disconnect", "connect"]
placeholder = st.integers(-2, 5).map(lambda n: {"_placeholder": True, "num": n})
event_args = st.lists(st.one_of(json_value, placeholder, placeholder), max_size=3)
namespaces = st.sampled_from([NAMESPACE, "/", "/yjs|other-doc", "/nope", ""])


@st.composite
def socketio_packet(draw: st.DrawFn) -> tuple[str, list[bytes | str]]:
    """One hostile Socket.IO/Engine.IO input: a kind label and its WebSocket frames."""
    choice = draw(st.sampled_from(range(9)))
    if choice == 0:
        return "random text frame", [draw(st.text(max_size=120))]
    if choice == 1:
        return "random binary frame", [draw(st.binary(max_size=200))]
    if choice == 2:
        return "engine.io packet", [draw(st.sampled_from("0123456789")) + draw(st.text(max_size=60))]
    if choice == 3:
        packet_type = draw(st.sampled_from("0123456789"))
        return "socket.io packet", [f"4{packet_type}{draw(namespaces)},{draw(st.text(max_size=60))}"]
    if choice == 4:
        ack = draw(st.one_of(st.just(""), st.integers(0, 2**40).map(str)))
        body = json.dumps([draw(st.sampled_from(EVENTS)), *draw(event_args)])
        return "event with hostile arguments", [f"42{draw(namespaces)},{ack}{body}"]
    if choice == 5:
        # A binary event whose attachment count may not match the attachments sent.
        declared = draw(st.integers(0, 4))
        sent = draw(st.integers(0, 3))
        ack = draw(st.one_of(st.just(""), st.integers(0, 1000).map(str)))
        body = json.dumps([draw(st.sampled_from(EVENTS)), *draw(event_args)])
        attachments = [draw(st.binary(max_size=120)) for _ in range(sent)]
        return "binary event, attachment mismatch", [f"45{declared}-{NAMESPACE},{ack}{body}", *attachments]
    if choice == 6:
        # A well-formed event whose Yjs payload is garbage.
        event = draw(st.sampled_from(["sync-update", "sync-step-1", "awareness-update"]))
        ack = "" if event != "sync-step-1" else str(draw(st.integers(0, 1000)))
        body = json.dumps([event, {"_placeholder": True, "num": 0}])
        return f"{event} with a garbage payload", [
            f"451-{NAMESPACE},{ack}{body}",
            draw(st.binary(max_size=200)),
        ]
    if choice == 7:
        body = json.dumps(["sync-update", {"_placeholder": True, "num": 0}])
        return "sync-update with a mutated real update", [f"451-{NAMESPACE},{body}", draw(mutated_update())]
    # A non-binary (string, number, object) payload where the protocol wants bytes.
    event = draw(st.sampled_from(["sync-update", "sync-step-1", "awareness-update"]))
    value = draw(json_value)
    return f"{event} with a non-binary payload", [f"42{NAMESPACE},1{json.dumps([event, value])}"]


@pytest.mark.slow
@FUZZ_SETTINGS
@given(packets=st.lists(socketio_packet(), min_size=1, max_size=4))
def test_fuzz_socketio_packets(fuzz_target: FuzzTarget, packets: list[tuple[str, list[bytes | str]]]) -> None:
    frames = [frame for _kind, fs in packets for frame in fs]
    outcome = run(send_socketio_frames(fuzz_target.server.ws_url, TARGET_DOC, frames))
    _after_input(fuzz_target, outcome, [f"sio: {k}" for k, _f in packets])


polling_body = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.lists(st.text(max_size=40), min_size=1, max_size=4).map(lambda parts: "\x1e".join(parts).encode()),
    st.binary(max_size=100).map(lambda b: b"b" + b),
    st.text(max_size=60).map(lambda s: f"40{NAMESPACE},{s}".encode()),
)


@pytest.mark.slow
# No shrinking here: a failing (unanswered) request costs the whole request timeout per attempt.
@settings(FUZZ_SETTINGS, max_examples=max(10, EXAMPLES // 3), phases=[Phase.explicit, Phase.generate])
@given(bodies=st.lists(polling_body, min_size=1, max_size=3), with_session=st.booleans())
def test_fuzz_socketio_polling_bodies(
    fuzz_target: FuzzTarget, bodies: list[bytes], with_session: bool
) -> None:
    statuses = run(send_polling_bodies(fuzz_target.server.url, bodies, with_session))
    assert all(status < 500 for status in statuses), f"server error answering {bodies!r}: {statuses}"
    _after_input(fuzz_target, None, ["polling: hostile body" + (" in a session" if with_session else "")])


# --- Oversized messages and hostile document names ------------------------------------------------


def _insert_update(text: str) -> bytes:
    from pycrdt import Doc, Text

    doc = Doc()
    doc["text"] = Text()
    doc["text"] += text
    return doc.get_update()


def _oversized_update() -> bytes:
    # A real update that would insert text: over the limit it must be refused, not applied.
    update = _insert_update("OVERSIZED" * (MAX_MESSAGE_BYTES // 9 + 10))
    assert len(update) > MAX_MESSAGE_BYTES
    return update


def test_oversized_ywebsocket_message_closes_the_connection(fuzz_target: FuzzTarget) -> None:
    frame = b"\x00\x02" + var_bytes(_oversized_update())
    outcome = run(send_ywebsocket_frames(fuzz_target.server.ws_url, TARGET_DOC, [frame], quiet=1.0))
    assert outcome.closed_by_server, "an oversized y-websocket frame should close the connection"
    _after_input(fuzz_target, outcome, ["ws: oversized update"])
    fuzz_target.check_guardians()


def test_oversized_socketio_attachment_closes_the_connection(fuzz_target: FuzzTarget) -> None:
    header = f"451-{NAMESPACE},{json.dumps(['sync-update', {'_placeholder': True, 'num': 0}])}"
    frames: list[bytes | str] = [header, _oversized_update()]
    # The server first sends the namespace DISCONNECT (final for socket.io-client), closes 1 s later.
    outcome = run(send_socketio_frames(fuzz_target.server.ws_url, TARGET_DOC, frames, quiet=3.0, limit=3.0))
    assert outcome.closed_by_server, "an oversized Socket.IO attachment should close the connection"
    assert f"41{NAMESPACE}," in outcome.texts, f"no namespace DISCONNECT before the close: {outcome.texts}"
    _after_input(fuzz_target, outcome, ["sio: oversized update"])
    fuzz_target.check_guardians()


def test_oversized_polling_body_is_answered_promptly(fuzz_target: FuzzTarget) -> None:
    # Within the polling session the body is refused; the request must still be answered (3 s deadline).
    body = b"4" + b"x" * (MAX_MESSAGE_BYTES + 10)
    statuses = run(send_polling_bodies(fuzz_target.server.url, [body], True))
    assert all(400 <= s < 500 for s in statuses), f"expected a 4xx refusal, got {statuses}"
    _after_input(fuzz_target, None, ["polling: oversized body"])
    fuzz_target.check_guardians()


HOSTILE_NAMES = [
    "..",
    "../../etc/passwd",
    "a" * 5000,
    "%00",
    "%2F%2E%2E",
    "名前",
    "with space",
    "semi;colon",
    "quote'\"",
    "emoji-\U0001f600",
    "tab\tname",
    "",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: repr(n)[:20])
def test_hostile_document_names_are_served_or_refused_cleanly(fuzz_target: FuzzTarget, name: str) -> None:
    import urllib.parse

    quoted = urllib.parse.quote(name, safe="%./")
    for send in (send_ywebsocket_frames, send_socketio_frames):
        try:
            run(send(fuzz_target.server.ws_url, quoted, [b"\x00\x00\x01\x00"]))
        except (OSError, ConnectionError, ConnectionRefusedError, AssertionError) as refused:
            fuzz_target.outcomes[f"name refused: {type(refused).__name__}"] += 1
        except Exception as exc:
            # aiohttp raises WSServerHandshakeError (a ClientError) for an HTTP refusal: that is clean.
            import aiohttp

            if not isinstance(exc, aiohttp.ClientError | TimeoutError):
                raise
            fuzz_target.outcomes[f"name refused: {type(exc).__name__}"] += 1
    _after_input(fuzz_target, None, ["hostile document name"])
    # Nothing written under a hostile name may leak into another document.
    assert run(read_document(fuzz_target.server.ws_url, f"fresh-{uuid.uuid4().hex}")) == ""


# Found by benchmarks/item_socket/atheris_ywebsocket.py: a 5-byte "update" whose leading counts make
# the Yjs decoder reserve ~512 MB before it fails.
AMPLIFYING_UPDATE = bytes.fromhex("bff9fffb00")
PEAK_GROWTH_LIMIT_MB = 128


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("VmHWM missing from /proc/<pid>/status")


@pytest.mark.parametrize("protocol", ["ws", "sio"])
def test_a_tiny_update_does_not_make_the_server_allocate_hundreds_of_megabytes(
    tmp_path: Path, protocol: str
) -> None:
    # A server of its own: its peak RSS (VmHWM) must not carry marks of earlier inputs.
    server = harness.ServerProcess(tmp_path / "data", log_dir=tmp_path, extra_args=FUZZ_SERVER_ARGS)
    server.start()
    try:
        doc = "amplification"
        peak_before = _peak_rss_mb(server.pid)
        if protocol == "ws":
            # The SyncStep1 after it is answered only once the server has handled the update.
            frames: list[bytes | str] = [b"\x00\x01" + var_bytes(AMPLIFYING_UPDATE), b"\x00\x00\x01\x00"]
            run(send_ywebsocket_frames(server.ws_url, doc, frames, quiet=1.0))
        else:
            header = f"451-/yjs|{doc},{json.dumps(['sync-update', {'_placeholder': True, 'num': 0}])}"
            run(send_socketio_frames(server.ws_url, doc, [header, AMPLIFYING_UPDATE], quiet=1.0))
        growth = _peak_rss_mb(server.pid) - peak_before
        assert server.alive(), server.stderr_text()
        assert run(read_document(server.ws_url, doc)) == ""
    finally:
        server.stop()
    assert growth < PEAK_GROWTH_LIMIT_MB, (
        f"a {len(AMPLIFYING_UPDATE)}-byte update raised the server's peak RSS by {growth:.0f} MB"
    )


@pytest.mark.parametrize("body", [b"0", b"2", b"6"], ids=["open", "ping", "noop"])
def test_polling_packets_a_client_must_not_send_are_answered(fuzz_target: FuzzTarget, body: bytes) -> None:
    # Found by the long fuzz run: python-engineio never answers these POSTs, so each one pins a
    # request forever. The server must answer (a 4xx, or 200 after ignoring it) within the 3 s limit.
    statuses = run(send_polling_bodies(fuzz_target.server.url, [body], True))
    assert all(status < 500 for status in statuses), statuses
    _after_input(fuzz_target, None, [f"polling: client-sent packet {body.decode()}"])


# Mutated real updates (found by the long fuzz run and an offline search over 20,000 mutations):
# yrs (the server's decoder) accepts it, the npm Yjs client throws on it ("Cannot read properties of
# undefined (reading 'id')" in findIndexSS); relayed as received it crashes every JS client.
YJS_POISON_UPDATE = bytes.fromhex(
    "0106fe070028010773637261746368026b30017c0000000004010c736372617463682d746578740532323a303b28"
    "010773637261746368026b31017c41b0000084fe07050532323a310228010773637261746368026b32017c423000"
    "0084fe075a0532323a323b00"
)
# yrs panics on it ("attempt to divide by zero" in ClientBlockList::find_index during commit), and
# the pycrdt Doc it was applied to panics on every later edit.
YRS_PANIC_UPDATE = bytes.fromhex(
    "010281080024010773637261746368026b30017c0000000004010c736354617463682d746578740532353a303b00"
)


@pytest.mark.parametrize(
    ("update", "sender"),
    [
        (YJS_POISON_UPDATE, "ws"),
        (YJS_POISON_UPDATE, "sio"),
        (YRS_PANIC_UPDATE, "ws"),
        (YRS_PANIC_UPDATE, "sio"),
    ],
    ids=["yjs-poison-over-ws", "yjs-poison-over-sio", "yrs-panic-over-ws", "yrs-panic-over-sio"],
)
def test_a_hostile_update_neither_breaks_the_document_nor_reaches_the_clients(
    tmp_path: Path, update: bytes, sender: str
) -> None:
    server = harness.ServerProcess(tmp_path / "data", log_dir=tmp_path, extra_args=FUZZ_SERVER_ARGS)
    server.start()
    agent = harness.Agent("hostile-update-clients")
    try:
        doc = "hostile-update"
        writer = agent.open("writer", "ws", server, doc)
        reader = agent.open("reader", "sio", server, doc)
        writer.wait_synced()
        reader.wait_synced()
        writer.insert(0, "before;")
        reader.wait_text("before;")

        if sender == "ws":
            frames: list[bytes | str] = [b"\x00\x02" + var_bytes(update), b"\x00\x00\x01\x00"]
            run(send_ywebsocket_frames(server.ws_url, doc, frames, quiet=0.5))
        else:
            header = f"451-/yjs|{doc},{json.dumps(['sync-update', {'_placeholder': True, 'num': 0}])}"
            run(send_socketio_frames(server.ws_url, doc, [header, update], quiet=0.5))

        # The real clients are still alive, connected and editing the same document.
        assert agent.proc.poll() is None, f"the npm clients crashed:\n{agent.stderr_text()[-3000:]}"
        writer.insert(len("before;"), "after;")
        reader.wait_text("before;after;", timeout=10)
        reader.map_set("reader", "ok")
        writer.wait_state(lambda st: st["map"].get("reader") == "ok", 10, "the reader's edit")
        fresh = agent.open("fresh", "ws", server, doc)
        fresh.wait_state(lambda st: st["synced"] and st["text"] == "before;after;", 10, "the whole document")
        assert agent.proc.poll() is None, f"the npm clients crashed:\n{agent.stderr_text()[-3000:]}"
    finally:
        agent.close()
        server.stop()
