"""Prometheus metrics: the exporter's HTTP metrics and Cortex's own, served at GET /metrics.

Under gunicorn every worker process counts its own traffic, so a scrape answered by one
process must still report all of them (FIELD-NOTES 13). gunicorn.conf.py's `on_starting`
sets PROMETHEUS_MULTIPROC_DIR before forking; prometheus_client then keeps every value in a
per-process file there, /metrics adds the files up, and `child_exit` drops a dead worker's
live gauges. Without the variable (Flask's test client, `flask run`) everything stays in
one process. Each app gets its own registry either way, so a process that builds many apps
(the test suite) never registers a metric twice.

Labels are bounded (FIELD-NOTES 13): `provider` is a configured worker name or `none`,
`model` a model that worker is configured with or reported, anything else `other`;
outcomes and failover reasons come from fixed sets. No label carries a key or free text.

    cortex_requests_total{provider, model, outcome}      chat requests, counted when they end
    cortex_time_to_first_token_seconds{provider}         request start to first content
    cortex_stream_duration_seconds{provider}             request start to end of stream
    cortex_input_tokens_total / cortex_output_tokens_total{provider}   from Usage events
    cortex_failovers_total{reason}                       failed attempts, by attempt kind
    cortex_key_cooldowns_total{provider}                 keys put to rest after a 429 or quota
    cortex_rate_limited_requests_total{scope}            429s: client (its limit) or upstream
    cortex_streams_in_flight                             streams being relayed now
    cortex_worker_up / cortex_worker_degraded{provider}  set from the health view at scrape time
    cortex_upstream_connections_idle{pid}                kept-alive upstream connections in the pool
    cortex_event_loop_watchers{pid}                      active gevent watchers (sockets waited on, timers)
    cortex_shared_state_up                               0 while a process cannot reach Redis (REDIS_URL)
    cortex_shared_state_errors_total                     failed connections and commands to that Redis

No metric carries an instance label: Prometheus adds `instance` (and `job`) to every series from
the target it scraped, so several Cortex instances are told apart without Cortex naming itself.

The last two are each process's own, read at scrape time by the process that answers the
scrape (so another process's value is as of its last scrape): O(pools) and O(1) reads, for
telling a leak from a busy moment (tests/live/test_faults.py).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import gevent
from flask import Flask, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from app.health import DEGRADED, UNAVAILABLE
from app.status import _status as worker_status  # the status /api/health shows
from providers.errors import ErrorKind

if TYPE_CHECKING:
    from app.gateway import Gateway

PATH = "/metrics"
OTHER = "other"
NONE = "none"

#: How a chat request ended (the `outcome` label and log field).
OUTCOMES = frozenset({
    "completed",            # the whole answer reached the client
    "failed_mid_stream",    # the upstream failed after the first token: an explicit error marker
    "client_disconnected",  # the client left before the end
    "no_workers",           # 503: nothing could answer
    "rate_limited",         # 429: every upstream is rate limiting
    "client_rate_limited",  # 429: this client exceeded its own limit
    "unauthorized",         # 401: no or a wrong client key
    "model_not_found",      # 404: no worker serves the model
    "rejected",             # 400: an upstream refused the client's own input
    "client_error",         # any other 4xx (validation, unknown provider, body too large...)
    "error",                # 500: a bug of ours
})  # fmt: skip
#: Attempt kinds (AttemptRecord.kind): the upstream error kinds and the dispatcher's own.
FAILOVER_REASONS = frozenset({k.value for k in ErrorKind} | {"keys_unavailable", "keys_disabled", "upstream_rpm"})
RATE_LIMIT_SCOPES = frozenset({"client", "upstream"})

#: LLM latencies: a first token in 50 ms (a local model) to a minute (a cold reasoning model).
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
#: Whole streams: a short reply in a second to a long generation of many minutes.
STREAM_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0)
#: The exporter's HTTP latencies: from /api/health's milliseconds to a whole non-streamed answer.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def bounded(value: str | None, allowed: Iterable[str], *, missing: str = NONE) -> str:
    """`value` when it is one of `allowed`, `missing` when there is none, else "other"."""
    if value is None:
        return missing
    return value if value in allowed else OTHER


def multiprocess_dir(env: Mapping[str, str] = os.environ) -> str | None:
    """The directory prometheus_client shares between processes, or None (single process)."""
    return env.get("PROMETHEUS_MULTIPROC_DIR", "").strip() or None


def url_rule(req: Request) -> str:
    """The exporter's grouping label: the route's rule (`/api/chat`), never the raw path, so a
    scan of random URLs adds no label values (all of them are `none`)."""
    rule = req.url_rule
    return rule.rule if rule is not None else NONE


class CortexMetrics:
    """Cortex's own metrics, in one registry. Also the dispatcher's observer: it is told of
    every failed attempt and every key cooldown (see `Dispatcher.observer`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.requests = counter(
            "cortex_requests_total", "Chat requests by the worker that answered, its model and the outcome",
            ("provider", "model", "outcome"),
        )  # fmt: skip
        self.ttft = Histogram(
            "cortex_time_to_first_token_seconds", "From the request's arrival to the first content from a worker",
            ("provider",), registry=registry, buckets=TTFT_BUCKETS,
        )  # fmt: skip
        self.stream_duration = Histogram(
            "cortex_stream_duration_seconds", "From the request's arrival to the end of its stream, however it ended",
            ("provider",), registry=registry, buckets=STREAM_BUCKETS,
        )  # fmt: skip
        self.input_tokens = counter("cortex_input_tokens_total", "Prompt tokens reported by upstreams", ("provider",))
        self.output_tokens = counter(
            "cortex_output_tokens_total", "Completion tokens reported by upstreams", ("provider",)
        )
        self.failovers = counter(
            "cortex_failovers_total", "Failed attempts (one worker, one key), by what went wrong", ("reason",)
        )
        self.key_cooldowns = counter(
            "cortex_key_cooldowns_total", "Keys put in cooldown after a 429 or a quota error", ("provider",)
        )
        self.rate_limited = counter(
            "cortex_rate_limited_requests_total",
            "Requests answered 429: scope=client (its own limit) or upstream (every upstream limiting)",
            ("scope",),
        )
        # Each process relays its own streams: the sum over live processes.
        self.streams_in_flight = Gauge(
            "cortex_streams_in_flight", "Streams being relayed now", registry=registry, multiprocess_mode="livesum"
        )
        # Each process has its own health view, written at scrape time by the process that
        # answers the scrape; "mostrecent" reports exactly that view, so a scrape never mixes
        # a stale process's opinion with a fresh one (as "max" or "sum" would).
        self.worker_up = Gauge(
            "cortex_worker_up", "1 when the worker can be used (health as in /api/health), else 0",
            ("provider",), registry=registry, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.worker_degraded = Gauge(
            "cortex_worker_degraded", "1 when the worker answers health checks slowly (DEGRADED_LATENCY)",
            ("provider",), registry=registry, multiprocess_mode="livemostrecent",
        )  # fmt: skip

        # One value per process (prometheus_client adds a `pid` label): each process's own,
        # set when it answers a scrape.
        self.upstream_idle = Gauge(
            "cortex_upstream_connections_idle",
            "Upstream connections of this process kept alive in its pool, waiting for a request",
            registry=registry, multiprocess_mode="liveall",
        )  # fmt: skip
        self.loop_watchers = Gauge(
            "cortex_event_loop_watchers",
            "Active watchers of this process's event loop: sockets being waited on, timers",
            registry=registry, multiprocess_mode="liveall",
        )  # fmt: skip

        # Each process has its own connection: the lowest value of the live processes, so one
        # process without Redis shows as 0. Without REDIS_URL it is 1 (local state, as configured).
        self.shared_state_up = Gauge(
            "cortex_shared_state_up",
            "1 when this instance's processes reach the shared state (Redis, REDIS_URL) or none is configured; "
            "0 while one serves on its own state",
            registry=registry, multiprocess_mode="livemin",
        )  # fmt: skip
        self.shared_state_errors = counter(
            "cortex_shared_state_errors_total", "Failed connections and commands to the shared state's Redis"
        )

    # --- the shared state's observer -------------------------------------------------------

    def shared_state_reachable(self, up: bool) -> None:
        self.shared_state_up.set(1 if up else 0)

    def shared_state_error(self) -> None:
        self.shared_state_errors.inc()

    # --- the dispatcher's observer -----------------------------------------------------------

    def attempt_failed(self, worker: str, kind: str) -> None:
        self.failovers.labels(reason=bounded(kind, FAILOVER_REASONS)).inc()

    def key_cooled(self, worker: str) -> None:
        self.key_cooldowns.labels(provider=worker).inc()

    # --- requests and streams --------------------------------------------------------------

    def stream_started(self) -> None:
        self.streams_in_flight.inc()

    def stream_ended(self, provider: str, duration: float) -> None:
        self.streams_in_flight.dec()
        self.stream_duration.labels(provider=provider).observe(duration)

    def request_ended(self, *, provider: str, model: str, outcome: str, ttft: float | None,
                      input_tokens: int | None, output_tokens: int | None, chat: bool) -> None:  # fmt: skip
        """One request's end. Labels must already be bounded (`provider_label`, `model_label`)."""
        outcome = bounded(outcome, OUTCOMES)
        if outcome == "rate_limited":
            self.rate_limited.labels(scope="upstream").inc()
        elif outcome == "client_rate_limited":
            self.rate_limited.labels(scope="client").inc()
        if not chat:
            return
        self.requests.labels(provider=provider, model=model, outcome=outcome).inc()
        if ttft is not None:
            self.ttft.labels(provider=provider).observe(ttft)
        if input_tokens:
            self.input_tokens.labels(provider=provider).inc(input_tokens)
        if output_tokens:
            self.output_tokens.labels(provider=provider).inc(output_tokens)

    def refresh_workers(self, gateway: Gateway) -> None:
        """Set the worker gauges from this process's health view (called at scrape time)."""
        now = gateway.clock()
        snapshot = gateway.health.snapshot
        for worker in gateway.pool:
            status, _ = worker_status(worker, snapshot, now)
            self.worker_up.labels(provider=worker.name).set(0 if status == UNAVAILABLE else 1)
            self.worker_degraded.labels(provider=worker.name).set(1 if status == DEGRADED else 0)

    def refresh_process(self, gateway: Gateway) -> None:
        """Set this process's own gauges (called at scrape time): cheap reads, no walk of the heap."""
        self.upstream_idle.set(gateway.transport.idle_connections())
        watchers = getattr(gevent.get_hub().loop, "activecnt", None)
        if isinstance(watchers, int):
            self.loop_watchers.set(watchers)


def provider_label(gateway: Gateway, worker: str | None) -> str:
    return bounded(worker, {w.name for w in gateway.pool})


def model_label(gateway: Gateway, worker: str | None, model: str | None) -> str:
    """The model when the worker that answered is configured with it or reported it; a
    worker without a model list serves whatever a client names, so that is `other`."""
    found = gateway.pool.get(worker) if worker is not None else None
    if found is None or model is None:
        return NONE
    served = set(found.models(gateway.health.snapshot.of(found.name).models))
    if found.spec.default_model:
        served.add(found.spec.default_model)
    return bounded(model, served)


def create_metrics(gateway: Gateway) -> CortexMetrics:
    """Cortex's metrics in a registry of this app's own; the dispatcher reports to them."""
    metrics = CortexMetrics(CollectorRegistry())
    gateway.dispatcher.observer = metrics
    gateway.shared.observer = metrics
    metrics.shared_state_reachable(not gateway.shared.enabled)  # Redis: 0 until connected
    return metrics


def install_exporter(app: Flask, metrics: CortexMetrics, gateway: Gateway) -> None:
    """Serve /metrics (exempt from client auth, not tracked itself) and track every request
    by its url rule with prometheus-flask-exporter's `flask_http_*` metrics."""
    options: dict[str, Any] = {
        "group_by": url_rule,
        "buckets": HTTP_BUCKETS,
        "registry": metrics.registry,
        "metrics_decorator": _refreshing(metrics, gateway),
    }
    if multiprocess_dir() is not None:
        # Serves /metrics from this app, adding up every process's files at each scrape.
        GunicornInternalPrometheusMetrics(app, path=PATH, **options)
    else:
        PrometheusMetrics(app, path=PATH, **options)


def _refreshing(metrics: CortexMetrics, gateway: Gateway) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def scrape(*args: Any, **kwargs: Any) -> Any:
            metrics.refresh_workers(gateway)
            metrics.refresh_process(gateway)
            return view(*args, **kwargs)

        return scrape

    return decorate
