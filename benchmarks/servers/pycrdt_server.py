"""pycrdt-websocket (Jupyter's y-websocket server in Python) for benchmarks/run.py, in memory.

Usage: python benchmarks/servers/pycrdt_server.py <port>
Served the way its documentation shows (``ASGIServer(WebsocketServer())`` under Hypercorn), on
127.0.0.1; a room is the URL path, as with y-websocket's Node server. Rooms are dropped when their
last client leaves (``auto_clean_rooms``, the default). Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config
from pycrdt.websocket import ASGIServer, WebsocketServer


async def main(port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    websocket_server = WebsocketServer()
    app = ASGIServer(websocket_server)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    config.accesslog = None
    # Hypercorn's default (16 MiB) would refuse nothing the benchmark sends; stated for clarity.
    config.websocket_max_message_size = 64 * 2**20
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with websocket_server:
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: pycrdt_server.py <port>")
    asyncio.run(main(int(sys.argv[1])))
