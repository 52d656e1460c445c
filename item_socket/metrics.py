"""Prometheus metrics of one app, in a registry of its own (no global registry).

No label carries a document name: label sets stay bounded however many documents come and go.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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


class _ScaleOutGauges(Collector):
    """Scale-out gauges read at scrape time."""

    def __init__(
        self,
        redis_healthy: Callable[[], bool],
        outbox: Callable[[], int],
        redis_memory: Callable[[], tuple[int, int] | None],
    ) -> None:
        self._redis_healthy = redis_healthy
        self._outbox = outbox
        self._redis_memory = redis_memory

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "item_socket_redis_healthy",
            "1 while the last Redis command succeeded.",
            value=int(self._redis_healthy()),
        )
        yield GaugeMetricFamily(
            "item_socket_outbox_updates",
            "Updates applied here and not yet appended to their Redis stream (held while Redis is away).",
            value=self._outbox(),
        )
        memory = self._redis_memory()
        if memory is not None:
            # At maxmemory (noeviction) Redis refuses appends: edits are held, then refused.
            yield GaugeMetricFamily(
                "item_socket_redis_memory_used_bytes",
                "Redis' used_memory (INFO memory), read every 15 s.",
                value=memory[0],
            )
            yield GaugeMetricFamily(
                "item_socket_redis_maxmemory_bytes", "Redis' maxmemory (0: no limit).", value=memory[1]
            )


class _HotPath(Collector):
    """The metrics counted once per message or delivery, kept in plain integers read at scrape time.

    prometheus_client's Counter.inc and Histogram.observe take a lock (about 0.8 µs each, 5% of a
    delivery's CPU in the profile of docs/benchmarks.md). These are only ever counted on the event
    loop thread and scraped on it too, so plain integers need no lock. Exposed exactly as a
    Counter (``_total``, ``_created``) and a Histogram (cumulative ``le`` buckets, ``_sum``) are.
    """

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.created = time.time()
        # (protocol, direction) -> [messages, bytes]
        self.traffic = {(p, d): [0, 0] for p in PROTOCOLS for d in ("in", "out")}
        self.bounds = buckets
        # counts[i]: observations <= bounds[i] and > bounds[i - 1]; the last one: above every bound.
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Record one update's propagation time (seconds)."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def collect(self) -> Iterable[Metric]:
        messages = CounterMetricFamily(
            "item_socket_messages", "Protocol messages.", labels=["protocol", "direction"]
        )
        size = CounterMetricFamily(
            "item_socket_bytes", "Payload bytes of protocol messages.", labels=["protocol", "direction"]
        )
        for (protocol, direction), (count, nbytes) in self.traffic.items():
            messages.add_metric([protocol, direction], count, created=self.created)
            size.add_metric([protocol, direction], nbytes, created=self.created)
        yield messages
        yield size
        cumulative, running = [], 0
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((bound, running))
        propagation = HistogramMetricFamily(
            "item_socket_update_propagation_seconds",
            "From an update's arrival to its write to every local peer of the document.",
        )
        propagation.add_metric([], cumulative, sum_value=self.sum)
        yield propagation


class Metrics:
    """Counters and histograms of one app, plus the live gauges (bound later by ``bind_live``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._hot = _HotPath(
            (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
        )
        self.registry.register(self._hot)
        self._traffic = self._hot.traffic
        # item_socket_update_propagation_seconds: ``observe(seconds)``.
        self.propagation = self._hot
        self.errors = Counter("item_socket_errors", "Errors by kind.", ["kind"], registry=self.registry)
        self.flush_seconds = Histogram(
            "item_socket_persistence_flush_seconds",
            "Duration of one flush of the documents' pending updates to their log: the store, or in the "
            "scale-out their Redis streams (one pipeline).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.loads = Counter(
            "item_socket_document_loads", "Documents loaded from the store.", registry=self.registry
        )
        self.unloads = Counter(
            "item_socket_document_unloads", "Documents unloaded from memory.", registry=self.registry
        )
        # The scale-out (Redis streams + shared store); registered always, stay at zero without it.
        self.stream_lag = Histogram(
            "item_socket_stream_lag_seconds",
            "From another replica's append of an update to its Redis stream to its application here.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.redis_seconds = Histogram(
            "item_socket_redis_seconds",
            "Round trip of one Redis command or pipeline (loads, appends, presence) that succeeded.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        # Observed by store.TimedStore only, so it never includes Redis (see app.create_app).
        self.store_seconds = Histogram(
            "item_socket_store_operation_seconds",
            "Duration of one document store call that succeeded (PostgreSQL with --store-url, else "
            "SQLite), by operation: load and append (the log of a store without Redis), load_snapshot and "
            "save_snapshot (the scale-out's snapshots), ping (the scale-out's readiness probe).",
            ["operation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.compaction_seconds = Histogram(
            "item_socket_compaction_seconds",
            "Duration of one compaction that stored a snapshot: Redis reads and trim, the merge, and "
            "PostgreSQL's snapshot read and write (the PostgreSQL calls alone are in "
            "item_socket_store_operation_seconds).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.compactions = Counter(
            "item_socket_compactions",
            "Compactions of a document's Redis stream into its stored snapshot, by outcome "
            "(compacted, busy: another replica held the lock, fenced, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.compaction_overlaps = Counter(
            "item_socket_compaction_overlaps",
            "Compactions that ran while another compaction of the same document did (must stay 0).",
            registry=self.registry,
        )
        self.stream_gaps = Counter(
            "item_socket_stream_gaps",
            "Times this replica found a document's stream entries trimmed before it had read them "
            "(it lagged behind a compaction) and reloaded the snapshot that covers them.",
            registry=self.registry,
        )
        self.documents_followed = Gauge(
            "item_socket_documents_followed",
            "Documents whose Redis stream this replica follows.",
            registry=self.registry,
        )
        self.rebuilds = Counter(
            "item_socket_document_rebuilds",
            "Documents rebuilt from their stored and pending updates after the Yjs decoder crashed on them.",
            registry=self.registry,
        )

    def bind_scale_out(
        self,
        redis_healthy: Callable[[], bool],
        outbox: Callable[[], int],
        redis_memory: Callable[[], tuple[int, int] | None] = lambda: None,
    ) -> None:
        """Register the scale-out's scrape-time gauges (only when item_socket runs with Redis)."""
        self.registry.register(_ScaleOutGauges(redis_healthy, outbox, redis_memory))

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
        counts = self._traffic[protocol, "in"]
        counts[0] += 1
        counts[1] += nbytes

    def count_out(self, protocol: str, messages: int, nbytes: int) -> None:
        """Count ``messages`` sent messages totalling ``nbytes``."""
        counts = self._traffic[protocol, "out"]
        counts[0] += messages
        counts[1] += nbytes
