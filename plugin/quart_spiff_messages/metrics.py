"""Prometheus metrics: what happened to each message, how long it took, and what waits now.

Counters and the histogram live in ``prometheus_client``'s default registry. With several worker processes
(``PROMETHEUS_MULTIPROC_DIR`` set, which ``spiff-messages serve`` does itself) each process writes its own files
and a scrape sums them, whichever worker answers. The gauges are not kept per process: they are counted in the
database at scrape time, so every worker reports the same truth.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# result: delivered, started, buffered, not_accepted, accepted (execution_mode=asynchronous: queued, a start's
# instance reserved), replayed, conflict, invalid (refused by a rule, 4xx), error (the process failed, or the request
# could not be handled: busy instance, database)
SEND_RESULTS = ("delivered", "started", "buffered", "not_accepted", "accepted", "replayed", "conflict", "invalid",
                "error")

SEND_TOTAL = Counter("spiff_message_send", "Messages sent, by what happened to them.", ["result"])
SEND_DURATION = Histogram(
    "spiff_message_send_duration_seconds", "Time to route one sent message, its transaction included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
EXPIRED_TOTAL = Counter("spiff_message_expired", "Buffered messages whose time to live ran out.")
TIMER_FIRED_TOTAL = Counter("spiff_timer_fired", "Timers that fired (an instance's timer event, or a timer start "
                            "event that started an instance).", ["kind"])
for _kind in ("instance", "start"):
    TIMER_FIRED_TOTAL.labels(kind=_kind)

for _result in SEND_RESULTS:  # every series exists from the start, so rate() sees the first one
    SEND_TOTAL.labels(result=_result)


def observe_send(result: str, seconds: float) -> None:
    SEND_TOTAL.labels(result=result).inc()
    SEND_DURATION.observe(seconds)


def observe_timers_fired(kind: str, count: int) -> None:
    if count:
        TIMER_FIRED_TOTAL.labels(kind=kind).inc(count)


def observe_expired(count: int) -> None:
    if count:
        EXPIRED_TOTAL.inc(count)


class _Gauges(Collector):
    def __init__(self, buffered: int, waiting: int, timers: int) -> None:
        self.buffered = buffered
        self.waiting = waiting
        self.timers = timers

    def collect(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("spiff_messages_buffered", "Messages kept (status ready) until a receiver waits.",
                              value=self.buffered),
            GaugeMetricFamily("spiff_subscriptions_waiting", "Catch points of process instances waiting for a "
                              "message.", value=self.waiting),
            GaugeMetricFamily("spiff_timers_pending", "Timers process instances wait at (due or not).",
                              value=self.timers),
        ]


def exposition(buffered: int, waiting: int, timers: int) -> bytes:
    """The text format of every metric: this process's (or all processes') counters, and the gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        counters = generate_latest(registry)
    else:
        counters = generate_latest(REGISTRY)
    gauges = CollectorRegistry()
    gauges.register(_Gauges(buffered, waiting, timers))
    return counters + generate_latest(gauges)
