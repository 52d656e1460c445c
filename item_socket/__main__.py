"""``python -m item_socket`` / ``item-socket``: run the service until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence

from aiohttp import web

from .app import create_app, drain
from .keys import REGISTRY
from .logs import configure_logging, log_event
from .settings import Settings, SettingsError, load_settings, redact
from .store import StoreError

logger = logging.getLogger("item_socket")

EXIT_CONFIG_ERROR = 2


async def serve(settings: Settings) -> int:
    """Serve until a termination signal, then drain and stop within ``settings.shutdown_grace``."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    app = create_app(settings)
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=max(0.1, settings.shutdown_grace / 4), handle_signals=False
    )
    try:
        await runner.setup()
    except StoreError as exc:
        log_event(logger, logging.ERROR, "store_unavailable", "cannot start: %s", exc, reason=str(exc))
        return 1
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        log_event(
            logger,
            logging.ERROR,
            "listen_failed",
            "cannot listen on %s:%d: %s",
            settings.host,
            settings.port,
            exc,
            host=settings.host,
            port=settings.port,
        )
        await runner.cleanup()
        return 1
    log_event(
        logger,
        logging.INFO,
        "listening",
        "listening on %s:%d",
        settings.host,
        settings.port,
        host=settings.host,
        port=settings.port,
        data_dir=str(settings.data_dir),
        store=redact(settings.store_url) if settings.store_url else "sqlite",
        redis=settings.redis_url,
        auth=settings.auth_secret_file is not None,
    )

    await stop.wait()
    started = time.monotonic()
    log_event(
        logger,
        logging.INFO,
        "shutdown_started",
        "received %s: shutting down (grace %.1f s)",
        received[0],
        settings.shutdown_grace,
        signal=received[0],
        grace=settings.shutdown_grace,
    )
    # A second signal while draining cuts it short.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    try:
        async with asyncio.timeout(settings.shutdown_grace * 0.9):
            await drain(app, settings.shutdown_grace / 2)
            await runner.cleanup()
    except TimeoutError:
        log_event(
            logger,
            logging.ERROR,
            "shutdown_timeout",
            "shutdown exceeded %.1f s; exiting anyway",
            settings.shutdown_grace,
        )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(app[REGISTRY].flush(), settings.shutdown_grace * 0.1)
        return 1
    log_event(
        logger,
        logging.INFO,
        "stopped",
        "stopped in %.3f s",
        time.monotonic() - started,
        seconds=round(time.monotonic() - started, 3),
    )
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: parse flags/env, configure logs, run the server, exit with its status."""
    try:
        settings = load_settings(argv)
    except SettingsError as exc:
        for line in str(exc).splitlines():
            print(f"item-socket: error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    configure_logging(settings.log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional (absent on Windows)
        runner = asyncio.run
    else:
        runner = uvloop.run
    raise SystemExit(runner(serve(settings)))


if __name__ == "__main__":
    main()
