"""The Socket.IO fast paths read python-socketio/python-engineio internals: they are on only for the
versions they were verified against, and off (the libraries' own paths) on any other."""

from __future__ import annotations

import importlib.metadata
import logging

import pytest

from item_socket import socketio_ns
from item_socket.keys import SOCKETIO
from item_socket.socketio_ns import VERIFIED_LIBRARIES, fast_paths_verified

from .conftest import ServerFactory
from .support import SocketIOClient, wait_until


def test_the_lock_pins_the_verified_versions() -> None:
    installed = {name: importlib.metadata.version(name) for name in VERIFIED_LIBRARIES}
    assert installed == VERIFIED_LIBRARIES, "re-verify the fast paths, then update VERIFIED_LIBRARIES"
    assert fast_paths_verified()


def test_another_version_turns_the_fast_paths_off_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="item_socket.socketio_ns"):
        assert not fast_paths_verified({**VERIFIED_LIBRARIES, "python-engineio": "9.0.0"})
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "socketio_fast_paths_off"]
    assert "9.0.0" in record.getMessage() and "slower, still correct" in record.getMessage()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_without_the_fast_paths_clients_still_converge(
    server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    monkeypatch.setattr(socketio_ns, "VERIFIED_LIBRARIES", {**VERIFIED_LIBRARIES, "python-socketio": "0.0.1"})
    server = await server_factory()
    sio = server.app[SOCKETIO]
    handler = sio.namespace_handlers["*"]
    assert handler.websockets.fast_paths is False
    emitted: list[str] = []
    library_emit = sio.emit

    async def counting_emit(event: str, *args: object, **kwargs: object) -> None:
        emitted.append(event)
        await library_emit(event, *args, **kwargs)

    monkeypatch.setattr(sio, "emit", counting_emit)
    a = await SocketIOClient(server.http_url, "slow-path", transports=(transport,)).connect()
    b = await SocketIOClient(server.http_url, "slow-path", transports=(transport,)).connect()
    for i in range(20):
        a.text += f"a{i} "
        b.text += f"b{i} "
    await wait_until(lambda: str(a.text) == str(b.text) and str(a.text).count(" ") == 40, what="convergence")
    # Every update reached the other client through python-socketio's own emit.
    assert emitted.count("sync-update") >= 40, emitted.count("sync-update")
    await a.close()
    await b.close()
