"""Prometheus metrics of one app, in a registry of its own (no global registry).

No label carries a document name: label sets stay bounded however many documents come and go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PROTOCOLS = ("socketio", "ywebsocket")
TRANSPORTS = ("websocket", "polling")


class _LiveGauges(Collector):
    """Gauges read from the live state at scrape time, so nothing has to be kept in step by hand."""

    def __init__(
        self,
        connections: Callable[[], dict[tuple[str, str], int]],
        documents: Callable[[], int],
        backlog: Callable[[], int],
        store_healthy: Callable[[], bool],
        draining: Callable[[], bool],
    ) -> None:
        self._connections = connections
        self._documents = documents
        self._backlog = backlog
        self._store_healthy = store_healthy
        self._draining = draining

    def collect(self) -> Iterable[GaugeMetricFamily]:
        conns = GaugeMetricFamily(
            "item_socket_connections", "Open client connections.", labels=["protocol", "transport"]
        )
        counts = self._connections()
        for protocol in PROTOCOLS:
            for transport in TRANSPORTS:
                if protocol == "ywebsocket" and transport == "polling":
                    continue
                conns.add_metric([protocol, transport], counts.get((protocol, transport), 0))
        yield conns
        yield GaugeMetricFamily(
            "item_socket_documents", "Documents loaded in memory.", value=self._documents()
        )
        yield GaugeMetricFamily(
            "item_socket_persistence_backlog_updates",
            "Updates applied in memory and not yet written to the store.",
            value=self._backlog(),
        )
        yield GaugeMetricFamily(
            "item_socket_store_healthy",
            "1 while the last store operation succeeded.",
            value=int(self._store_healthy()),
        )
        yield GaugeMetricFamily("item_socket_draining", "1 while shutting down.", value=int(self._draining()))


class Metrics:
    """Counters and histograms of one app, plus the live gauges (bound later by ``bind_live``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "item_socket_messages", "Protocol messages.", ["protocol", "direction"], registry=self.registry
        )
        self.bytes = Counter(
            "item_socket_bytes",
            "Payload bytes of protocol messages.",
            ["protocol", "direction"],
            registry=self.registry,
        )
        # Label lookups cost more than the increments on the hot path: resolve them once.
        self._children = {
            (protocol, direction): (
                self.messages.labels(protocol, direction),
                self.bytes.labels(protocol, direction),
            )
            for protocol in PROTOCOLS
            for direction in ("in", "out")
        }
        self.errors = Counter("item_socket_errors", "Errors by kind.", ["kind"], registry=self.registry)
        self.propagation = Histogram(
            "item_socket_update_propagation_seconds",
            "From an update's arrival to its write to every local peer of the document.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.flush_seconds = Histogram(
            "item_socket_persistence_flush_seconds",
            "Duration of one write of a document's pending updates to the store.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.loads = Counter(
            "item_socket_document_loads", "Documents loaded from the store.", registry=self.registry
        )
        self.unloads = Counter(
            "item_socket_document_unloads", "Documents unloaded from memory.", registry=self.registry
        )
        self.rebuilds = Counter(
            "item_socket_document_rebuilds",
            "Documents rebuilt from their stored and pending updates after the Yjs decoder crashed on them.",
            registry=self.registry,
        )

    def bind_live(
        self,
        connections: Callable[[], dict[tuple[str, str], int]],
        documents: Callable[[], int],
        backlog: Callable[[], int],
        store_healthy: Callable[[], bool],
        draining: Callable[[], bool],
    ) -> None:
        """Register the scrape-time gauges reading the given callables."""
        self.registry.register(_LiveGauges(connections, documents, backlog, store_healthy, draining))

    def count_in(self, protocol: str, nbytes: int) -> None:
        """Count one received message."""
        messages, size = self._children[protocol, "in"]
        messages.inc()
        size.inc(nbytes)

    def count_out(self, protocol: str, messages: int, nbytes: int) -> None:
        """Count ``messages`` sent messages totalling ``nbytes``."""
        if messages:
            counter, size = self._children[protocol, "out"]
            counter.inc(messages)
            size.inc(nbytes)
