"""Coverage-guided fuzzing (atheris/libFuzzer) of item_socket's y-websocket message handling.

Feeds sequences of arbitrary frames to `item_socket.ywebsocket.handle_message` on a real `Room`
(pycrdt Doc and Awareness), as the server does for every incoming frame. The only exceptions allowed
are the ones the server turns into a clean close: `ProtocolError` and `InvalidUpdate`. Anything else
(including a Rust panic surfacing as pyo3's PanicException) is reported by libFuzzer with the input
that caused it, and so is an input that raises the peak RSS by more than MAX_INPUT_GROWTH_MB.

Usage: .venv/bin/python benchmarks/item_socket/atheris_ywebsocket.py -runs=200000
       (any libFuzzer flag works: -max_total_time=60, a corpus directory, ...)
"""

from __future__ import annotations

import os
import resource
import sys
import time

import atheris

with atheris.instrument_imports(include=["item_socket"]):
    from item_socket.metrics import Metrics
    from item_socket.rooms import Broadcast, InvalidUpdate, Peer, Room
    from item_socket.yprotocol import ProtocolError
    from item_socket.ywebsocket import handle_message

from pycrdt import Doc, Text


class SilentPeer(Peer):
    """A writable peer that drops what the room broadcasts to it."""

    protocol = "ywebsocket"

    @property
    def transport(self) -> str:
        return "websocket"

    def send_broadcast(self, message: Broadcast) -> int:
        return len(message.payload)

    def close_soon(self, reason: str) -> None:
        pass


METRICS = Metrics()


def make_room() -> Room:
    doc = Doc()
    doc["text"] = text = Text()
    text += "fuzz target"
    return Room("fuzz", doc, METRICS)


# An input that raises the process's peak RSS by more than this is reported: a few hundred bytes
# must not make the server allocate hundreds of megabytes.
# ATHERIS_MAX_INPUT_GROWTH_MB raises it (e.g. to look past a known amplification for other faults).
MAX_INPUT_GROWTH_MB = float(os.environ.get("ATHERIS_MAX_INPUT_GROWTH_MB", "64"))


class MemoryAmplification(Exception):
    """One small input made the handler allocate far more memory than its size justifies."""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


WRITER = SilentPeer(can_write=True)
READER = SilentPeer(can_write=False)


def test_one_input(data: bytes) -> None:
    """One input = up to 4 frames from a writer or a read-only peer, on a fresh room."""
    provider = atheris.FuzzedDataProvider(data)
    peak_before = peak_rss_mb()
    room = make_room()
    room.add_peer(WRITER)
    room.add_peer(READER)
    for _ in range(provider.ConsumeIntInRange(1, 4)):
        peer = READER if provider.ConsumeBool() else WRITER
        frame = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 300))
        try:
            handle_message(room, peer, frame, time.perf_counter())
        except (ProtocolError, InvalidUpdate):
            pass
    room.close()
    growth = peak_rss_mb() - peak_before
    if growth > MAX_INPUT_GROWTH_MB:
        raise MemoryAmplification(f"{len(data)}-byte input raised peak RSS by {growth:.0f} MB")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
