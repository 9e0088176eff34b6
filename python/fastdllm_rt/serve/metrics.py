"""Prometheus metrics of a server: counters it keeps per request, and the
engine's own counters read at scrape time."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class EngineCollector:
    """The engine's stats as metrics, read when Prometheus scrapes."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        s = self.engine.stats()
        yield CounterMetricFamily("fastdllm_model_forwards", "Batched model forwards run", value=s["model_forwards"])
        yield CounterMetricFamily("fastdllm_sequence_forwards", "Sum over forwards of the sequences in them",
                                  value=s["sequence_forwards"])
        yield CounterMetricFamily("fastdllm_engine_tokens_generated", "Output tokens of finished sequences",
                                  value=s["tokens_generated"])
        hist = GaugeMetricFamily("fastdllm_batch_size_forwards", "Forwards run with this many sequences",
                                 labels=["batch_size"])
        for size, count in sorted(s["batch_size_histogram"].items()):
            hist.add_metric([str(size)], count)
        yield hist
        yield GaugeMetricFamily("fastdllm_queue_length", "Requests waiting for KV pages or a batch slot",
                                value=s["requests_waiting"])
        yield GaugeMetricFamily("fastdllm_requests_running", "Requests being decoded", value=s["requests_running"])
        yield GaugeMetricFamily("fastdllm_kv_pages_in_use", "KV pages held by running requests",
                                value=s["pages_in_use"])
        yield GaugeMetricFamily("fastdllm_kv_pages_cached", "KV pages kept by the prefix cache",
                                value=s["pages_cached"])
        yield GaugeMetricFamily("fastdllm_kv_pages_total", "KV pages in the budget", value=s["pages_total"])


class ServerMetrics:
    def __init__(self, engine):
        self.registry = CollectorRegistry()
        self.requests = Counter("fastdllm_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.generated = Counter("fastdllm_generated_tokens", "Completion tokens returned", registry=self.registry)
        self.prompt = Counter("fastdllm_prompt_tokens", "Prompt tokens received", registry=self.registry)
        self.tpf = Histogram("fastdllm_tokens_per_forward", "Tokens per forward of each finished request",
                             buckets=(1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32), registry=self.registry)
        self.ttft = Histogram("fastdllm_time_to_first_token_seconds", "Time to the first streamed text",
                              registry=self.registry)
        self.registry.register(EngineCollector(engine))

    def finished(self, result) -> None:
        self.generated.inc(len(result.token_ids))
        self.prompt.inc(result.prompt_tokens)
        if result.num_forwards:
            self.tpf.observe(result.tokens_per_forward)
