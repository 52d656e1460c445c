"""JWT authorization as the real npm clients see it: refusals and read-only connections."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import SERVER_ARGS, AgentFactory
from .harness import ServerProcess, YClient, make_jwt, wait_until

DOCS = "board-*"


@pytest.fixture(scope="module")
def jwt_secret(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """A throwaway HS256 secret for this module's server, and the file holding it."""
    secret = secrets.token_hex(32).encode()
    path = tmp_path_factory.mktemp("auth") / "jwt-secret"
    path.write_bytes(secret)
    return secret, path


@pytest.fixture(scope="module")
def auth_server_process(
    tmp_path_factory: pytest.TempPathFactory, jwt_secret: tuple[bytes, Path]
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("auth-server")
    server = ServerProcess(
        base / "data", log_dir=base, extra_args=(*SERVER_ARGS, "--auth-secret-file", str(jwt_secret[1]))
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def auth_server(auth_server_process: ServerProcess) -> Iterator[ServerProcess]:
    """The module's server with JWT auth on; its log tail is shown when the test fails."""
    assert auth_server_process.alive(), f"auth server died:\n{auth_server_process.stderr_text()}"
    yield auth_server_process
    print(f"\n===== item_socket (auth) stderr =====\n{auth_server_process.stderr_text()}")


def _refusal(client: YClient, timeout: float = 10.0) -> dict[str, object]:
    """Wait for the protocol's refusal: y-websocket's permission-denied message, Socket.IO's connect_error."""
    if client.protocol == "ws":

        def denied() -> dict[str, object] | None:
            return next((e for e in client.events() if e["type"] == "permission-denied"), None)
    else:

        def denied() -> dict[str, object] | None:
            return next((e for e in client.events() if e["type"] == "connection-error"), None)

    return wait_until(denied, timeout, f"{client} to be refused")


@pytest.mark.parametrize("protocol", ["ws", "sio", "sio-polling"])
@pytest.mark.parametrize("token_kind", ["missing", "bad-signature", "other-document", "expired", "garbage"])
def test_a_refused_client_gets_the_protocols_refusal(
    auth_server: ServerProcess,
    agent_factory: AgentFactory,
    jwt_secret: tuple[bytes, Path],
    doc_name: str,
    protocol: str,
    token_kind: str,
) -> None:
    secret, _path = jwt_secret
    tokens = {
        "missing": None,
        "bad-signature": make_jwt(b"not-the-secret", {DOCS: "write"}),
        "other-document": make_jwt(secret, {"other-*": "write"}),
        "expired": make_jwt(secret, {DOCS: "write"}, expires_in=-120),
        "garbage": "not.a.jwt",
    }
    token = tokens[token_kind]
    doc = f"board-{doc_name}"
    agent = agent_factory()
    owner = agent.open("owner", "ws", auth_server, doc, token=make_jwt(secret, {DOCS: "write"}))
    owner.wait_synced()
    owner.insert(0, "secret content")

    options = {"token": token} if token else {}
    intruder = agent.open("intruder", protocol, auth_server, doc, **options)
    event = _refusal(intruder)
    if protocol == "ws":
        assert event["reason"], "the permission-denied message should say why"
        # A refusal the client cannot fix by retrying is final: y-websocket stops on 4400-4499.
        closed = wait_until(
            lambda: next((e for e in intruder.events() if e["type"] == "closed"), None),
            10,
            "the y-websocket client to stop reconnecting",
        )
        assert closed["code"] == 4403
    else:
        assert event["message"] == "Unauthorized"
    state = intruder.state()
    assert not state["synced"]
    assert state["text"] == ""
    # The refused client's edits never reach the document.
    intruder.insert(0, "intrusion")
    owner.insert(0, ">")
    fresh = agent.open("fresh", "sio", auth_server, doc, token=make_jwt(secret, {DOCS: "read"}))
    fresh.wait_state(lambda st: st["text"] == ">secret content", 10, "the owner's text only")


@pytest.mark.parametrize("protocol", ["ws", "sio", "sio-polling"])
def test_a_read_only_clients_edits_do_not_reach_others(
    auth_server: ServerProcess,
    agent_factory: AgentFactory,
    jwt_secret: tuple[bytes, Path],
    doc_name: str,
    protocol: str,
) -> None:
    secret, _path = jwt_secret
    doc = f"board-{doc_name}"
    write_token = make_jwt(secret, {DOCS: "write"})
    read_token = make_jwt(secret, {doc: "read", "elsewhere-*": "write"})
    writer = agent_factory().open("writer", "ws", auth_server, doc, token=write_token)
    writer.wait_synced()
    writer.insert(0, "original")
    observer = agent_factory().open(
        "observer", "sio", auth_server, doc, token=make_jwt(secret, {doc: "write"})
    )
    observer.wait_text("original")

    # The read-only client has an offline edit before it connects (sent in its first sync) ...
    reader = agent_factory().open("reader", protocol, auth_server, doc, token=read_token, connect=False)
    reader.insert(0, "offline-forgery ")
    reader.connect()
    reader.wait_state(
        lambda st: st["synced"] and "original" in st["text"], 15, "the read-only client to sync"
    )
    # ... and edits after it (sent as updates).
    reader.insert(0, "live-forgery ")
    reader.map_set("forged", True)
    # Barrier: awareness is allowed for readers; once its awareness reaches the observer, the server
    # has processed the reader's earlier messages on the same connection.
    reader.set_awareness({"user": "reader"})
    wait_until(
        lambda: observer.awareness().get(reader.client_id) == {"user": "reader"},
        10,
        "the reader's awareness (a read-only client still shows presence)",
    )
    # It still receives the writer's edits.
    writer.insert(len("original"), " + more")
    reader.wait_state(lambda st: "original + more" in st["text"], 10, "the writer's edit at the reader")

    for client in (writer, observer):
        client.wait_text("original + more")
        assert client.state()["map"] == {}
    fresh = agent_factory().open("fresh", "sio-polling", auth_server, doc, token=write_token)
    fresh.wait_state(
        lambda st: st["synced"] and st["text"] == "original + more" and st["map"] == {},
        10,
        "the stored document without the forgeries",
    )


def test_write_token_for_a_glob_allows_editing(
    auth_server: ServerProcess, agent_factory: AgentFactory, jwt_secret: tuple[bytes, Path], doc_name: str
) -> None:
    secret, _path = jwt_secret
    token = make_jwt(secret, {DOCS: "write"})
    clients = [
        agent_factory().open(f"c-{p}", p, auth_server, f"board-{doc_name}", token=token)
        for p in ("ws", "sio", "sio-polling")
    ]
    for client in clients:
        client.wait_synced()
    clients[0].insert(0, "a")
    clients[1].insert(0, "b")
    clients[2].insert(0, "c")
    for client in clients:
        client.wait_state(lambda st: sorted(st["text"]) == ["a", "b", "c"], 10, "all three edits")
