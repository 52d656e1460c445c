"""The board page in headless Chromium, as a newcomer meets it: served by a real nginx (the stack's
nginx.conf plus a /socket.io/ proxy, standing in for Traefik) in front of a real item_socket process
that requires tokens, all on 127.0.0.1.

Without a token the page must say how to get one (`spaced token local`, or the URL `make up`
printed), as an error (role="alert"), and must not offer editing; with a token it connects, enables
editing and hints at what to do on an empty board; editing is off while the server is gone and back
when it returns.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.app_stack.local import mint_token
from infra.app_stack.services.nginx import render_nginx_conf
from infra.images import web_static_files
from tests.item_socket.e2e.harness import ServerProcess
from tests.support import free_port, http_get, wait_until
from tests.web.browser import CONNECTED, ERROR_SHOWN, SYNCED, Browser, browser_session

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SECRET = b"board-page-test-secret-0123456789abcdef"

# In front of item_socket as Traefik is in the stack: WebSocket upgrades and long-polling both pass.
SOCKET_IO_PROXY = """
        location /socket.io/ {{
            proxy_pass http://127.0.0.1:{port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $spaced_connection;
            proxy_set_header Host $host;
            proxy_read_timeout 120s;
        }}
"""
UPGRADE_MAP = """
    map $http_upgrade $spaced_connection {
        default upgrade;
        '' '';
    }
"""


@dataclass
class Site:
    """The page on nginx in front of item_socket: where to open it and how to get tokens."""

    url: str
    server: ServerProcess

    def token(self, doc_glob: str) -> str:
        """A JWT item_socket accepts for `doc_glob`, as `spaced token local --doc` mints it."""
        return mint_token(SECRET, {doc_glob: "write"}, 600, time.time())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """nginx (the stack's config) serving what the nginx image serves, proxying to item_socket."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is not installed: run scripts/install-deps.sh")
    base = tmp_path_factory.mktemp("board_page")
    secret_file = base / "jwt_secret"
    secret_file.write_bytes(SECRET)
    server = ServerProcess(
        base / "data",
        log_dir=base,
        extra_args=("--auth-secret-file", str(secret_file), "--shutdown-grace", "3"),
    )
    # Exactly the files the nginx image gets (web/*.html and web/dist, built by npm if stale).
    root = base / "html"
    for relative, path in web_static_files(progress=print):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, root / relative)
    port = free_port("127.0.0.1")
    conf = render_nginx_conf(listen=f"127.0.0.1:{port}", web_root=str(root), temp_dir=str(base))
    conf = conf.replace("\n    server {", UPGRADE_MAP + "\n    server {", 1)
    # item_socket runs here: its paths go to it instead of the stack's "no task" 503 answer.
    conf = re.sub(r"\n        location \^~ /socket\.io/ \{.*?\n        \}", "", conf, count=1, flags=re.S)
    conf = conf.replace(
        "\n        location / {", SOCKET_IO_PROXY.format(port=server.port) + "\n        location / {", 1
    )
    (base / "nginx.conf").write_text(conf)
    server.start()
    log = (base / "nginx.log").open("wb")
    process = subprocess.Popen(
        # Workers as root only here: pytest's tmp directories are private to root.
        [nginx, "-p", str(base), "-c", str(base / "nginx.conf"), "-g", "daemon off; user root root;"],
        stdout=log,
        stderr=log,
    )
    try:
        wait_until(
            lambda: process.poll() is None and http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200,
            20,
            "nginx",
        )
        yield Site(url=f"http://127.0.0.1:{port}", server=server)
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        server.stop()
        print(f"===== item_socket =====\n{server.stderr_text()}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium behind the JSON-line driver; always closed."""
    with browser_session() as started:
        yield started


def new_doc() -> str:
    """A document name no other test uses."""
    return f"board-page-{uuid.uuid4().hex[:8]}"


def test_without_a_token_the_page_says_how_to_get_one_and_offers_no_editing(
    site: Site, browser: Browser
) -> None:
    page = browser.open(f"{site.url}/#doc={new_doc()}")
    browser.wait(page, ERROR_SHOWN)
    state = browser.state(page)
    message = state["message"]
    assert message["visible"]
    assert "spaced token local" in message["codes"], message
    assert "make up" in message["codes"] and "#token=…" in message["codes"], message
    assert "Unauthorized" not in message["text"], "the server's bare refusal is no instruction"
    # Styled and announced as an error, not plain text.
    assert message["role"] == "alert"
    assert "error" in message["className"].split()
    assert message["background"] not in ("rgba(0, 0, 0, 0)", "transparent"), message
    assert state["status"] == "refused"
    assert state["addDisabled"] is True
    assert state["editable"] == "false"
    assert not state["hint"]["visible"], "no empty-board hint on a board that is not there"
    # A click on the disabled button adds nothing.
    browser.click(page, "#add")
    assert browser.state(page)["itemsInDoc"] == 0


def test_a_token_for_another_document_names_the_command_for_this_one(site: Site, browser: Browser) -> None:
    doc = new_doc()
    page = browser.open(f"{site.url}/#token={site.token('other-*')}&doc={doc}")
    browser.wait(page, ERROR_SHOWN)
    state = browser.state(page)
    assert f"spaced token local --doc '{doc}'" in state["message"]["codes"], state["message"]
    assert state["message"]["role"] == "alert"
    assert state["addDisabled"] is True


def test_with_a_token_the_board_connects_and_hints_on_an_empty_board(site: Site, browser: Browser) -> None:
    doc = new_doc()
    page = browser.open(f"{site.url}/#token={site.token(doc)}&doc={doc}")
    browser.wait(page, f"{CONNECTED} && {SYNCED}")
    state = browser.state(page)
    assert state["status"] == "connected"
    assert state["addDisabled"] is False and state["editable"] == "true"
    assert not state["message"]["visible"]
    assert state["hint"]["visible"], state
    assert "empty" in state["hint"]["text"] and "Add item" in state["hint"]["text"]
    assert state["description"] and "board" in state["description"]
    # The first item replaces the hint.
    browser.click(page, "#add")
    browser.wait(page, "document.querySelectorAll('#board .item').length === 1")
    assert not browser.state(page)["hint"]["visible"]


def test_editing_is_off_while_the_server_is_gone_and_back_when_it_returns(
    site: Site, browser: Browser
) -> None:
    doc = new_doc()
    page = browser.open(f"{site.url}/#token={site.token(doc)}&doc={doc}")
    browser.wait(page, f"{CONNECTED} && {SYNCED}")
    site.server.stop()
    try:
        browser.wait(page, "document.querySelector('#add').disabled === true")
        gone = browser.state(page)
        assert gone["editable"] == "false" and gone["status"] != "connected"
        # While socket.io retries, the page says it cannot connect, as an error.
        browser.wait(page, ERROR_SHOWN)
        assert "retrying" in browser.state(page)["message"]["text"]
    finally:
        site.server.start()
    browser.wait(page, f"{CONNECTED} && {SYNCED}", timeout_ms=30000)
    back = browser.state(page)
    assert back["status"] == "connected" and back["editable"] == "true"
    assert not back["message"]["visible"]
