"""A local fake of the few GitHub REST endpoints infra/ci/github.py uses, on 127.0.0.1.

In memory: issues (with `pull_request` set for PRs), their comments, and every request seen. Checks
the bearer token and the JSON content type like GitHub does; pages listings with per_page/page.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

TOKEN = "test-token"


@dataclass
class State:
    """What the fake holds."""

    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> comment (with issue number)
    requests: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 100
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


def _handler(state: State, repo: str) -> type[BaseHTTPRequestHandler]:
    base = f"/repos/{repo}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length", "0"))
            return json.loads(self.rfile.read(length)) if length else {}

        def _handle(self, method: str) -> None:
            url = urlparse(self.path)
            with state.lock:
                state.requests.append((method, url.path))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, {"message": "Bad credentials"})
                    return
                if method in ("POST", "PATCH") and self.headers.get("Content-Type") != "application/json":
                    self._send(415, {"message": "expected JSON"})
                    return
                self._route(method, url.path, parse_qs(url.query))

        def _page(self, items: list[dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
            per_page = int(query.get("per_page", ["30"])[0])
            page = int(query.get("page", ["1"])[0])
            return items[(page - 1) * per_page : page * per_page]

        def _route(self, method: str, path: str, query: dict[str, list[str]]) -> None:
            if method == "GET" and path == f"{base}/issues":
                state_filter = query.get("state", ["open"])[0]
                issues = [i for i in state.issues.values() if state_filter in ("all", i["state"])]
                self._send(200, self._page(issues, query))
            elif method == "POST" and path == f"{base}/issues":
                number = state.new_id()
                body = self._body()
                state.issues[number] = {
                    "number": number,
                    "title": body["title"],
                    "body": body.get("body", ""),
                    "labels": body.get("labels", []),
                    "state": "open",
                    "html_url": f"https://github.test/{repo}/issues/{number}",
                }
                self._send(201, state.issues[number])
            elif match := re.fullmatch(rf"{base}/issues/(\d+)/comments", path):
                number = int(match.group(1))
                if number not in state.issues:
                    self._send(404, {"message": "Not Found"})
                elif method == "GET":
                    self._send(
                        200, self._page([c for c in state.comments.values() if c["issue"] == number], query)
                    )
                else:
                    comment_id = state.new_id()
                    state.comments[comment_id] = {
                        "id": comment_id,
                        "issue": number,
                        "body": self._body()["body"],
                        "html_url": f"https://github.test/c/{comment_id}",
                    }
                    self._send(201, state.comments[comment_id])
            elif (match := re.fullmatch(rf"{base}/issues/comments/(\d+)", path)) and method == "PATCH":
                comment = state.comments[int(match.group(1))]
                comment["body"] = self._body()["body"]
                self._send(200, comment)
            elif (match := re.fullmatch(rf"{base}/issues/(\d+)", path)) and method == "PATCH":
                issue = state.issues[int(match.group(1))]
                issue.update(self._body())
                self._send(200, issue)
            else:
                self._send(404, {"message": "Not Found"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

    return Handler


@contextmanager
def fake_github(repo: str = "spaced-fun/infra") -> Iterator[tuple[str, State]]:
    """A running fake: yields (api URL, state); always shut down on exit."""
    state = State()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, repo))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
