"""The services' Prometheus metrics: ``--metrics-listen HOST:PORT`` on ``fedhh coordinator
serve`` and ``fedhh party serve`` serves them at ``http://HOST:PORT/metrics`` (prometheus_client,
its own registry per service, so several services can live in one process).

Coordinator (read from its state file at each scrape, so they survive restarts):

* ``fedhh_runs{state}`` — runs by state (waiting, running, done, failed, cancelled);
* ``fedhh_rounds_total`` — rounds the runs went through, summed; ``fedhh_requests_total``,
  ``fedhh_replies_total``, ``fedhh_party_failures_total`` — requests sent, replies taken, party
  failures (missed deadlines, implausible replies);
* ``fedhh_parties`` — registered parties;
* ``fedhh_refusals_total{method,code}`` — calls refused, by method and gRPC status;
* ``fedhh_storage_errors_total`` and ``fedhh_state_writable`` — writes the state file refused,
  and 1 while it takes writes (the health service's SERVING).

Party agent:

* ``fedhh_party_requests_total{outcome}`` — requests answered (``answered``) or refused by the
  party's admission (``refused``);
* ``fedhh_party_reports_total`` — user reports the party's answers used (``rate()`` of it is
  the ingestion rate of a device party); ``fedhh_party_levels_total`` — levels estimated;
* ``fedhh_party_answer_seconds`` — seconds to answer a request (the levels' decode);
* ``fedhh_device_reports_total{outcome}`` — reports its device endpoint took (``accepted``) or
  refused (the status);
* ``fedhh_party_epsilon_left`` — the ε its privacy ledger has left for new runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from fedhh.errors import ParameterError
from fedhh.mechanisms.tasks import ErrorResult
from fedhh.protocol.coordinator import costs_of
from fedhh.protocol.messages import Reply
from fedhh.wire.security import split_address

Sample = tuple[str, str, float, dict[str, str]]  # kind ("gauge"/"counter"), name, value, labels


class _Read(Collector):
    """Metrics computed at scrape time by ``read`` (a service's state, as it is now)."""

    def __init__(self, read: Callable[[], list[Sample]], help_of: dict[str, str]) -> None:
        self.read, self.help_of = read, help_of

    def collect(self) -> Iterator[Any]:
        families: dict[str, Any] = {}
        for kind, name, value, labels in self.read():
            fam = families.get(name)
            if fam is None:
                cls = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
                fam = cls(name, self.help_of.get(name, name), labels=sorted(labels))
                families[name] = fam
            fam.add_metric([labels[k] for k in sorted(labels)], value)
        yield from families.values()


class ServiceMetrics:
    """One service's metrics: counters it bumps as things happen, plus what ``read`` computes
    from its state at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.refusals = Counter(
            "fedhh_refusals", "calls refused, by method and status", ["method", "code"], registry=r
        )
        self.requests = Counter(
            "fedhh_party_requests",
            "requests the party answered or refused",
            ["outcome"],
            registry=r,
        )
        self.reports = Counter("fedhh_party_reports", "user reports the answers used", registry=r)
        self.levels = Counter("fedhh_party_levels", "levels the party estimated", registry=r)
        self.answer_seconds = Histogram(
            "fedhh_party_answer_seconds",
            "seconds to answer a request",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
            registry=r,
        )
        self.device_reports = Counter(
            "fedhh_device_reports",
            "reports the device endpoint took or refused",
            ["outcome"],
            registry=r,
        )
        self._server: Any = None

    def observe_answer(self, reply: Reply, seconds: float) -> None:
        """A party's new answer (:attr:`fedhh.protocol.host.PartyHost.observe`): the request,
        the levels it estimated and the user reports they used, the seconds it took."""
        result = reply.result
        if isinstance(result, ErrorResult):
            self.requests.labels("refused").inc()
            return
        self.requests.labels("answered").inc()
        self.answer_seconds.observe(seconds)
        levels = costs_of(result)
        self.levels.inc(len(levels))
        self.reports.inc(sum(lv.reports for lv in levels))

    def read_state(self, read: Callable[[], list[Sample]], help_of: dict[str, str]) -> None:
        """Add metrics that ``read`` computes from the service's state at each scrape."""
        self.registry.register(_Read(read, help_of))

    def serve(self, listen: str) -> int:
        """Serve ``/metrics`` on ``listen`` (HOST:PORT, port 0: any free one); returns the port.
        A daemon thread: it ends with the service."""
        host, port = split_address(listen)
        try:
            self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ParameterError(f"--metrics-listen {listen}: cannot listen: {exc}") from None
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
