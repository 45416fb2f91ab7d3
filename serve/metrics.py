"""Prometheus metrics, kept in this process and written by hand in the text format.

``prometheus_client`` is not a dependency: a handful of counters and histograms, touched only
from the event-loop thread, need no library and no locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from brandguard.serve.admission import Admission
    from brandguard.serve.batching import MicroBatcher

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    """Cumulative buckets, as Prometheus wants them."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
        self.total += value
        self.n += 1


class Metrics:
    """Process-local counters, touched only from the event loop thread (no locks needed)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.verdicts: dict[str, int] = {}
        self.leads_upserted: dict[str, int] = {"created": 0, "updated": 0}
        self.decode_budget_refused = 0

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def count_verdict(self, verdict: str) -> None:
        self.verdicts[verdict] = self.verdicts.get(verdict, 0) + 1

    def render(self, batcher: MicroBatcher | None, info: dict[str, Any], admission: Admission | None = None,
               large_decodes: int | None = None) -> str:
        out: list[str] = []

        def head(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        def scalar(name: str, kind: str, help_: str, value: object) -> None:
            head(name, kind, help_)
            out.append(f"{name} {value}")

        head("brandguard_http_requests_total", "counter", "HTTP requests by method, route template and status.")
        for (m, r, s), v in sorted(self.requests.items()):
            out.append(f'brandguard_http_requests_total{{method="{m}",route="{esc(r)}",status="{s}"}} {v}')
        head("brandguard_http_request_duration_seconds", "histogram", "HTTP request latency by route template.")
        for r, h in sorted(self.latency.items()):
            for b, c in zip(h.buckets, h.counts):
                out.append(f'brandguard_http_request_duration_seconds_bucket{{route="{esc(r)}",le="{b}"}} {c}')
            out.append(f'brandguard_http_request_duration_seconds_bucket{{route="{esc(r)}",le="+Inf"}} {h.n}')
            out.append(f'brandguard_http_request_duration_seconds_sum{{route="{esc(r)}"}} {h.total:.6f}')
            out.append(f'brandguard_http_request_duration_seconds_count{{route="{esc(r)}"}} {h.n}')
        head("brandguard_verdicts_total", "counter", "Verdicts returned, by kind.")
        for k, v in sorted(self.verdicts.items()):
            out.append(f'brandguard_verdicts_total{{verdict="{k}"}} {v}')
        head("brandguard_leads_upserted_total", "counter", "Leads written by checks (created or refreshed).")
        for k, v in sorted(self.leads_upserted.items()):
            out.append(f'brandguard_leads_upserted_total{{result="{k}"}} {v}')
        if batcher is not None:
            st = batcher.stats
            scalar("brandguard_batches_total", "counter", "Inference batches run.", st.batches)
            scalar("brandguard_batch_images_total", "counter", "Images judged in batches.", st.images)
            head("brandguard_batch_size", "histogram", "Images per inference batch.")
            cum = 0
            for size in sorted(st.batch_sizes):
                cum += st.batch_sizes[size]
                out.append(f'brandguard_batch_size_bucket{{le="{size}"}} {cum}')
            out.append(f'brandguard_batch_size_bucket{{le="+Inf"}} {st.batches}')
            out.append(f"brandguard_batch_size_sum {st.images}")
            out.append(f"brandguard_batch_size_count {st.batches}")
            scalar("brandguard_failed_batches_total", "counter", "Inference batches that raised.", st.failed_batches)
            scalar("brandguard_inference_seconds_total", "counter", "Time spent in batched inference.",
                   f"{st.inference_seconds:.6f}")
            scalar("brandguard_queue_rejected_total", "counter", "Images refused because the queue was full (503).",
                   st.rejected)
            scalar("brandguard_queue_depth", "gauge", "Images waiting for inference now.", batcher.depth)
            scalar("brandguard_queue_capacity", "gauge", "Inference queue bound.", batcher.queue_size)
        if admission is not None:
            scalar("brandguard_inflight_images", "gauge", "Images admitted and not answered yet.", admission.inflight)
            scalar("brandguard_inflight_limit", "gauge", "Admission bound on images in flight.",
                   admission.settings.inflight_limit)
            scalar("brandguard_admission_rejected_total", "counter", "Images refused at admission (503).",
                   admission.rejected)
            scalar("brandguard_key_rejected_total", "counter", "Requests refused for their API key's bound (429).",
                   admission.key_rejected)
        scalar("brandguard_decode_budget_refused_total", "counter", "Images answered inconclusive (decode_budget) "
               "because their request's decode budget was spent.", self.decode_budget_refused)
        if large_decodes is not None:
            scalar("brandguard_large_decodes", "gauge", "Large-image decodes queued or running now.", large_decodes)
        head("brandguard_model_info", "gauge", "The loaded model and index (value is always 1).")
        labels = ",".join(f'{k}="{esc(str(info.get(k, "")))}"' for k in
                          ("model", "model_version", "model_sha256", "index_sha256", "index_count",
                           "index_generation"))
        out.append(f"brandguard_model_info{{{labels}}} 1")
        return "\n".join(out) + "\n"


def esc(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
