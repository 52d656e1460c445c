"""The service around the protocols: /healthz, /readyz, /metrics, JSON logs, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import socketio
from pycrdt import Doc, Text

from item_socket.app import create_app, drain
from item_socket.keys import REGISTRY
from item_socket.store import SQLiteStore
from item_socket.yprotocol import SYNC_UPDATE, sync_message
from tests.support import free_port

from .conftest import RunningServer, ServerFactory
from .support import FlakyStore, SocketIOClient, YWebsocketClient, wait_until


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with session.get(url) as response:
        return response.status, await response.json()


async def test_healthz_and_readyz_while_serving_and_draining(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    assert await get_json(session, server.http_url + "/healthz") == (200, {"status": "alive"})
    assert (await get_json(session, server.http_url + "/readyz"))[0] == 200
    client = await YWebsocketClient(session, server.ws_url("drain-me")).connect()
    await drain(server.app, 5)
    await client.closed.wait()  # clients are disconnected so they reconnect elsewhere
    status, body = await get_json(session, server.http_url + "/readyz")
    assert status == 503 and "draining" in body["problems"]
    assert (await get_json(session, server.http_url + "/healthz"))[0] == 200
    async with session.get(server.ws_url("drain-me").replace("ws://", "http://")) as refused:
        assert refused.status == 503
    sio = SocketIOClient(server.http_url, "drain-me")
    # A draining server refuses new Engine.IO sessions with 503 (the client retries elsewhere).
    with pytest.raises(socketio.exceptions.ConnectionError, match="Connection error"):
        await sio.connect()
    await sio.close()


async def test_readyz_fails_while_the_store_fails(
    server_factory: ServerFactory,
    settings_factory,
    session: aiohttp.ClientSession,  # type: ignore[no-untyped-def]
) -> None:
    store = FlakyStore()
    server = await server_factory(create_app(settings_factory(), store=store))
    store.fail_writes = True
    client = await YWebsocketClient(session, server.ws_url("doomed")).connect()
    client.text += "pending"
    registry = server.app[REGISTRY]
    await wait_until(lambda: not registry.store_healthy, what="a failed flush")
    status, body = await get_json(session, server.http_url + "/readyz")
    assert status == 503 and "store failing" in body["problems"]
    store.fail_writes = False
    await wait_until(lambda: registry.store_healthy, what="a recovered flush")
    status, _ = await get_json(session, server.http_url + "/readyz")
    assert status == 200
    await client.close()


async def test_metrics_report_connections_documents_messages_and_latency(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    yws = await YWebsocketClient(session, server.ws_url("m1")).connect()
    sio = await SocketIOClient(server.http_url, "m2").connect()
    yws.text += "a"
    sio.text += "b"

    async def scrape() -> tuple[dict[str, float], str]:
        async with session.get(server.http_url + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples, text

    # Wait (bounded) until both updates were applied and a flush stored them.
    deadline = time.monotonic() + 10
    while True:
        samples, text = await scrape()
        if (
            samples.get("item_socket_update_propagation_seconds_count", 0) >= 2
            and samples.get("item_socket_persistence_flush_seconds_count", 0) >= 1
        ):
            break
        assert time.monotonic() < deadline, f"the updates were not applied and stored: {samples}"
        await asyncio.sleep(0.05)  # the poll's pace
    assert samples['item_socket_connections{protocol="ywebsocket",transport="websocket"}'] == 1
    assert samples['item_socket_connections{protocol="socketio",transport="websocket"}'] == 1
    assert samples["item_socket_documents"] == 2
    assert samples['item_socket_messages_total{direction="in",protocol="ywebsocket"}'] >= 2
    assert samples['item_socket_messages_total{direction="out",protocol="socketio"}'] >= 1
    assert samples['item_socket_bytes_total{direction="in",protocol="socketio"}'] > 0
    assert samples["item_socket_update_propagation_seconds_count"] >= 2
    assert samples["item_socket_persistence_flush_seconds_count"] >= 1
    assert "item_socket_persistence_backlog_updates" in samples
    # No label carries a document name: label sets stay bounded.
    assert "m1" not in text and "m2" not in text
    await yws.close()
    await sio.close()


async def test_metrics_registries_are_per_app(server_factory: ServerFactory) -> None:
    first = await server_factory()
    second = await server_factory()
    from item_socket.keys import METRICS

    assert first.app[METRICS].registry is not second.app[METRICS].registry


# --- the real process --------------------------------------------------------------------------


@pytest.fixture
def process_factory(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    started: list[subprocess.Popen[bytes]] = []

    def start(*extra: str, data_dir: Path | None = None) -> tuple[subprocess.Popen[bytes], int, Path]:
        port = free_port()
        log = tmp_path / f"server-{port}.log"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "item_socket",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir or tmp_path / "data"),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        started.append(proc)
        return proc, port, log

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


async def wait_healthy(session: aiohttp.ClientSession, port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited during startup"
        try:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("server did not become healthy within 20 s")


async def wait_exit(proc: subprocess.Popen[bytes], seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"server still running {seconds} s after SIGTERM")
        await asyncio.sleep(0.02)
    return proc.returncode


@pytest.mark.slow
async def test_sigterm_flushes_disconnects_and_exits_within_grace(
    process_factory,
    session: aiohttp.ClientSession,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    # A long flush interval: only the shutdown flush can have written the updates.
    proc, port, log = process_factory("--flush-interval", "60", "--shutdown-grace", "4")
    await wait_healthy(session, port, proc)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    listening = [entry for entry in lines if entry["event"] == "listening"]
    assert listening and listening[0]["host"] == "127.0.0.1" and listening[0]["port"] == port

    watcher = await YWebsocketClient(session, f"ws://127.0.0.1:{port}/ws/shutdown-doc").connect()
    sio_watcher = await SocketIOClient(f"http://127.0.0.1:{port}", "shutdown-doc").connect()
    source: Doc = Doc()
    text = source.get("t", type=Text)
    burst = await session.ws_connect(f"ws://127.0.0.1:{port}/ws/shutdown-doc")
    for i in range(200):
        before = source.get_state()
        text += f"{i},"
        await burst.send_bytes(sync_message(SYNC_UPDATE, source.get_update(before)))
    await burst.close()
    await wait_until(lambda: str(watcher.text) == str(text), what="burst relayed")

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc, 4) == 0
    elapsed = time.monotonic() - started
    await watcher.closed.wait()
    await wait_until(lambda: sio_watcher.disconnected.is_set(), what="Socket.IO client disconnected")
    await sio_watcher.close()
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events.index("shutdown_started") < events.index("drained") < events.index("stopped")
    assert elapsed < 4

    async with SQLiteStore(tmp_path / "data") as store:
        stored: Doc = Doc()
        for update in await store.load("shutdown-doc"):
            stored.apply_update(update)
    assert str(stored.get("t", type=Text)) == str(text)


@pytest.mark.slow
async def test_restarted_process_serves_the_stored_document(
    process_factory,
    session: aiohttp.ClientSession,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    proc, port, _ = process_factory()
    await wait_healthy(session, port, proc)
    writer = await SocketIOClient(f"http://127.0.0.1:{port}", "restart-doc").connect()
    writer.text += "across restarts"
    reader = await SocketIOClient(f"http://127.0.0.1:{port}", "restart-doc").connect()
    await wait_until(lambda: str(reader.text) == "across restarts", what="the server to have the edit")
    await reader.close()
    await writer.close()
    proc.send_signal(signal.SIGINT)
    assert await wait_exit(proc, 15) == 0
    proc, port, _ = process_factory()
    await wait_healthy(session, port, proc)
    reader = await YWebsocketClient(session, f"ws://127.0.0.1:{port}/ws/restart-doc").connect()
    assert str(reader.text) == "across restarts"
    await reader.close()


def test_unusable_data_dir_exits_1_with_a_logged_reason(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "item_socket",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--data-dir",
            str(not_a_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    failure = [entry for entry in entries if entry["event"] == "store_unavailable"]
    assert failure and str(not_a_dir) in failure[0]["message"]


def test_hot_path_metrics_are_exposed_as_a_counter_and_a_histogram_would_be() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from item_socket.metrics import Metrics

    metrics = Metrics()
    metrics.count_in("ywebsocket", 10)
    metrics.count_out("socketio", 3, 90)
    for seconds in (0.0003, 0.0003, 5.0):
        metrics.propagation.observe(seconds)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    assert families["item_socket_messages"].type == "counter"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert samples["item_socket_messages_total", (("direction", "in"), ("protocol", "ywebsocket"))] == 1
    assert samples["item_socket_messages_total", (("direction", "out"), ("protocol", "socketio"))] == 3
    assert samples["item_socket_bytes_total", (("direction", "out"), ("protocol", "socketio"))] == 90
    assert samples["item_socket_messages_total", (("direction", "in"), ("protocol", "socketio"))] == 0
    assert ("item_socket_messages_created", (("direction", "in"), ("protocol", "ywebsocket"))) in samples
    assert families["item_socket_update_propagation_seconds"].type == "histogram"
    bucket = "item_socket_update_propagation_seconds_bucket"
    assert samples[bucket, (("le", "0.00025"),)] == 0
    assert samples[bucket, (("le", "0.0005"),)] == 2  # cumulative, le = "less than or equal"
    assert samples[bucket, (("le", "1.0"),)] == 2
    assert samples[bucket, (("le", "+Inf"),)] == 3
    assert samples["item_socket_update_propagation_seconds_count", ()] == 3
    assert abs(samples["item_socket_update_propagation_seconds_sum", ()] - 5.0006) < 1e-9
