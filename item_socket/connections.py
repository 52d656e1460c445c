"""Bookkeeping of live client connections: admission, counts for metrics, closing on shutdown."""

from __future__ import annotations

import asyncio
from collections import Counter

from .rooms import Peer


class Connections:
    """The peers currently attached, and whether new ones are admitted."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.accepting = True
        self.peers: set[Peer] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    def admission_error(self) -> str | None:
        """Why a new connection must be refused now, or None to admit it."""
        if not self.accepting:
            return "server is shutting down"
        if self.max_connections and len(self.peers) >= self.max_connections:
            return f"server is full ({self.max_connections} connections)"
        return None

    def add(self, peer: Peer) -> None:
        """Track an attached peer."""
        self.peers.add(peer)
        self._empty.clear()

    def discard(self, peer: Peer) -> None:
        """Forget a detached peer."""
        self.peers.discard(peer)
        if not self.peers:
            self._empty.set()

    async def wait_empty(self) -> None:
        """Return once no peer is attached."""
        await self._empty.wait()

    def counts(self) -> dict[tuple[str, str], int]:
        """Open connections by (protocol, transport)."""
        return dict(Counter((peer.protocol, peer.transport) for peer in self.peers))

    def close_all(self, reason: str) -> None:
        """Start closing every connection (clients reconnect, possibly to another replica)."""
        for peer in list(self.peers):
            peer.close_soon(reason)
