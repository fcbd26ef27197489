"""Prometheus metrics (SPEC §8), served on a loopback HTTP port when asked."""

from __future__ import annotations

import ipaddress

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from gatosd.errors import ProtocolError

_MS_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


class Metrics:
    """One registry per daemon, so tests can run several daemons in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.append_latency = Histogram(
            "gatos_journal_append_latency_ms", "Time from request to acknowledged append (ms)",
            buckets=_MS_BUCKETS, registry=self.registry)
        self.batch_size = Histogram(
            "gatos_journal_batch_events", "Events per group-commit batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry)
        self.appends = Counter("gatos_journal_appends_total", "Appended events (new, not duplicates)",
                               registry=self.registry)
        self.errors = Counter("gatos_requests_failed_total", "Requests answered with an error",
                              ["code"], registry=self.registry)
        self.connections = Gauge("gatos_connections", "Open client connections",
                                 registry=self.registry)
        self.fold_latency = Histogram("gatos_fold_latency_ms", "Fold latency (ms)",
                                      buckets=_MS_BUCKETS, registry=self.registry)
        self.bus_ack_lag = Gauge("gatos_bus_ack_lag", "Messages published but not yet acked",
                                 registry=self.registry)
        self.cache_rebuilds = Counter("gatos_cache_rebuilds_total", "Index rebuilds",
                                      registry=self.registry)

    def serve(self, address: str) -> int:
        """Serve `/metrics` on `host:port` (loopback only); return the bound port."""
        host, port = parse_loopback(address)
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)


def parse_loopback(address: str) -> tuple[str, int]:
    """`127.0.0.1:PORT` → (host, port); anything that is not loopback is refused."""
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
        if not sep or not 0 <= port < 65536 or not ipaddress.ip_address(host).is_loopback:
            raise ValueError
    except ValueError:
        raise ProtocolError(f"{address!r} is not a loopback HOST:PORT (e.g. 127.0.0.1:9464)",
                            "BAD_FRAME") from None
    return host, port


class MetricsObserver:
    """Feeds the server's connection count and error codes into the metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def connections(self, count: int) -> None:
        self._metrics.connections.set(count)

    def failed(self, code: str) -> None:
        self._metrics.errors.labels(code=code).inc()
